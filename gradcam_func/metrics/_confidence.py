"""Average Drop and Increase in Confidence (Chattopadhyay et al., 2018).

The explanation map E = x * CAM, with the CAM upsampled to the input and scaled to
[0, 1] per map, is scored against the input x. For each example:
``drop = max(0, Y - O) / Y`` and ``increase = O > Y``, where Y is the target's score on
x and O its score on E. The paper's Average Drop is ``100 * drop.mean()`` and its
Increase in Confidence ``100 * increase.float().mean()``.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any

import torch

from .._types import Target, Targets
from ..ops import normalize
from ._curves import DEFAULT_BATCH_SIZE, _matching
from ._inputs import Scorer, check_image_batch, check_positive, grid_rows

__all__ = ["confidence_change", "ConfidenceChange"]

ConfidenceChange = namedtuple("ConfidenceChange", "drop increase")


def confidence_change(
    model: Callable[..., Any],
    inputs: torch.Tensor,
    cams: Any,
    target: Target = None,
    *,
    targets: Targets = None,
    batch_size: int | None = None,
    additional_forward_args: Any = None,
) -> ConfidenceChange:
    """Per example: ``(drop, increase)``, each (B,) (or (K, B) with ``targets``).

    Scores: softmax probability for index targets, the value for callables.
    """
    call = "confidence_change"
    inputs = check_image_batch(inputs, call)
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    check_positive(call, "batch_size", batch_size)
    scorer = Scorer(model, inputs, target, targets, call, additional_forward_args)
    cams = _matching(cams, inputs, scorer, call)
    k, b = cams.shape[:2]
    masks = normalize(cams.flatten(0, 1)).unflatten(0, (k, b))  # (K, B, 1, *S) in [0, 1]
    ks, bs = grid_rows(k, b, device=inputs.device)

    def explained(start, stop):
        return inputs[bs[start:stop]] * masks[ks[start:stop], bs[start:stop]]

    explained_scores = scorer(explained, ks, bs, batch_size).reshape(k, b)
    clean = scorer.clean
    drop = (clean - explained_scores).clamp_min(0) / clean
    result = ConfidenceChange(drop, explained_scores > clean)
    return result if scorer.stacked else ConfidenceChange(drop[0], result.increase[0])
