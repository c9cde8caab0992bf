"""Target builders for models beyond classification: each returns a callable
``target(output) -> (B,)`` score that ``grad_cam``, every ``cam`` method, ``targets=``
(K at once) and the metrics take, on structured outputs too.

- ``segmentation(cls, mask=None)``: a class's logits summed (or averaged) over a mask,
  or over the pixels predicted as that class (pytorch-grad-cam's
  ``SemanticSegmentationTarget``);
- ``detection(box, cls)``: the score of the predicted box that best matches ``box`` for
  ``cls``, plus (``box_terms=True``) its overlap with ``box``, for DETR-style outputs
  (``logits``, ``pred_boxes``) and torchvision-style lists of dicts (pytorch-grad-cam's
  ``FasterRCNNBoxScoreTarget``);
- ``similarity(reference)``: the cosine similarity of an embedding to a reference
  embedding (CLIP image-text, retrieval);
- ``regression(index)`` / ``regression(reduce=fn)``: one output coordinate, or any
  reduction of the output;
- ``contrast(a, b)`` and ``finer(a, similar=k)``: class a minus class b, or minus the
  mean of the k classes the model scores closest to it (the Finer-CAM idea).

Each picks its tensor from the output as returned: ``logits=`` / ``embedding=`` take a
callable ``out -> Tensor`` where the default guess (the Tensor itself, ``out.logits``,
``out["out"]``, ...) does not fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ._checks import GradCamError, _describe, check_flags
from ._types import ScoreFn

__all__ = ["segmentation", "detection", "similarity", "regression", "contrast", "finer", "box_iou"]

_GUESSES = ("logits", "out", "image_embeds", "text_embeds", "pooler_output", "last_hidden_state")


def _pick(output, picker, what, builder):
    """The Tensor a target scores: ``picker(output)``, or the first guess that fits."""
    if picker is not None:
        return picker(output)
    if isinstance(output, torch.Tensor):
        return output
    for name in _GUESSES:
        value = output.get(name) if isinstance(output, Mapping) else getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise GradCamError(
        f"{builder}: cannot tell which Tensor of the model's {type(output).__name__} holds "
        f"the {what}; pass {what}=lambda out: ... to pick it."
    )


class _Target:
    """A callable target with a readable name (hypothesis and errors print it)."""

    def __init__(self, name, score):
        self.__name__, self._score = name, score

    def __call__(self, output):
        return self._score(output)

    def __repr__(self):
        return self.__name__


def segmentation(
    cls: int,
    mask: torch.Tensor | None = None,
    *,
    reduction: str = "sum",
    logits: Callable[[Any], torch.Tensor] | None = None,
) -> ScoreFn:
    """Class ``cls``'s logits summed (``reduction="mean"``: averaged) over ``mask``
    (a bool (H, W) or per-example (B, H, W) tensor), or, without a mask, over the pixels
    whose predicted class (the argmax over classes) is ``cls``.

    The logits are (B, classes, H, W): the output itself, ``out.logits`` (HuggingFace)
    or ``out["out"]`` (torchvision), or what ``logits(out)`` returns.
    """
    if reduction not in ("sum", "mean"):
        raise GradCamError(f"segmentation(..., reduction={reduction!r}): expected 'sum' or 'mean'.")
    name = f"segmentation(cls={cls}{', mask' if mask is not None else ''})"

    def score(output):
        scores = _pick(output, logits, "logits", "segmentation(...)")
        if scores.ndim < 3:
            raise GradCamError(
                f"{name}: expected segmentation logits (B, classes, *S), got shape "
                f"{tuple(scores.shape)}. A classifier's output has no pixels: use a class "
                "index target instead."
            )
        plane = scores[:, cls]
        region = (
            (scores.argmax(1) == cls)
            if mask is None
            else torch.as_tensor(mask, device=plane.device).bool().expand_as(plane)
        )
        weight = region.to(plane.dtype)
        total = (plane * weight).flatten(1).sum(1)
        if reduction == "mean":
            total = total / weight.flatten(1).sum(1).clamp_min(1)
        return total

    return _Target(name, score)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boxes ``a`` (N, 4) and ``b`` (M, 4), both
    ``(x0, y0, x1, y1)``: (N, M). Differentiable in both."""
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = (high - low).clamp_min(0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(-1)
    union = area_a[:, None] + area_b[None] - intersection
    return intersection / union.clamp_min(1e-12)


def _cxcywh_to_xyxy(boxes):
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def detection(
    box: torch.Tensor | Sequence[float],
    cls: int,
    *,
    iou_threshold: float = 0.5,
    box_terms: bool = False,
) -> ScoreFn:
    """The score of the predicted box that best matches ``box`` (highest IoU, above
    ``iou_threshold``) for class ``cls``, per example; with ``box_terms=True`` plus that
    IoU, so the box's position counts too (pytorch-grad-cam's FasterRCNNBoxScoreTarget
    adds it). A box with no match scores 0 (its CAM is all zeros).

    box: ``(x0, y0, x1, y1)``, one for all examples or one per example (B, 4), in the
    output's coordinates. Outputs:

    - DETR-style (``logits`` (B, Q, classes + 1), ``pred_boxes`` (B, Q, 4) as
      normalised ``(cx, cy, w, h)``): the score is the query's softmax probability of
      ``cls``; give ``box`` normalised to [0, 1] too.
    - torchvision-style: a list of B dicts with ``boxes`` (N, 4) in pixels, ``labels``
      (N,) and ``scores`` (N,): only boxes labelled ``cls`` match.
    """
    check_flags("detection", box_terms=box_terms)
    name = f"detection(box={box!r}, cls={cls})".replace("\n", "")

    def score(output):
        if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
            return torch.stack(
                [
                    _torchvision_score(
                        o, _box_of(box, b, o["boxes"]), cls, iou_threshold, box_terms
                    )
                    for b, o in enumerate(output)
                ]
            )
        logits = (
            getattr(output, "logits", None)
            if not isinstance(output, Mapping)
            else output.get("logits")
        )
        boxes = (
            getattr(output, "pred_boxes", None)
            if not isinstance(output, Mapping)
            else output.get("pred_boxes")
        )
        if not isinstance(logits, torch.Tensor) or not isinstance(boxes, torch.Tensor):
            raise GradCamError(
                f"{name}: expected a detector's output, DETR-style (logits, pred_boxes) or "
                f"a list of dicts with boxes, labels and scores; got {_describe(output)}. "
                "A classifier's output has no boxes: use a class index target instead."
            )
        probabilities = logits.softmax(-1)[..., cls]  # (B, Q)
        predicted = _cxcywh_to_xyxy(boxes)
        scores = []
        for b in range(logits.shape[0]):
            overlap = box_iou(_box_of(box, b, predicted[b])[None], predicted[b])[0]
            best = overlap.argmax()
            matched = overlap[best] > iou_threshold
            value = probabilities[b, best] + (overlap[best] if box_terms else 0)
            scores.append(torch.where(matched, value, torch.zeros_like(value)))
        return torch.stack(scores)

    return _Target(name, score)


def _box_of(box, b, like):
    box = torch.as_tensor(box, dtype=like.dtype, device=like.device)
    return box[b] if box.ndim == 2 else box


def _torchvision_score(output, box, cls, iou_threshold, box_terms):
    boxes, labels, scores = output["boxes"], output["labels"], output["scores"]
    if len(boxes) == 0:
        return scores.sum() * 0
    overlap = box_iou(box[None], boxes)[0]
    overlap = torch.where(labels == cls, overlap, torch.zeros_like(overlap))
    best = overlap.argmax()
    value = scores[best] + (overlap[best] if box_terms else 0)
    return torch.where(overlap[best] > iou_threshold, value, torch.zeros_like(value))


def similarity(
    reference: torch.Tensor, *, embedding: Callable[[Any], torch.Tensor] | None = None
) -> ScoreFn:
    """The cosine similarity of the output's embedding (B, D) to ``reference`` (D,)
    (or one per example, (B, D)): how much an image matches a text's embedding (CLIP),
    or a query.

    The embedding is the output itself, ``out.image_embeds``, ``out.pooler_output``, ...
    or what ``embedding(out)`` returns.
    """

    def score(output):
        vectors = _pick(output, embedding, "embedding", "similarity(...)")
        if vectors.ndim != 2:
            raise GradCamError(
                f"similarity(...): expected embeddings (B, D), got shape "
                f"{tuple(vectors.shape)}; pass embedding=lambda out: ... "
            )
        target = torch.as_tensor(reference, dtype=vectors.dtype, device=vectors.device)
        return torch.nn.functional.cosine_similarity(vectors, target.expand_as(vectors), dim=1)

    return _Target("similarity(reference)", score)


def regression(
    index: int | tuple[int, ...] | None = None,
    *,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    values: Callable[[Any], torch.Tensor] | None = None,
) -> ScoreFn:
    """One coordinate of a regression output, ``out[:, index]`` (an int, or a tuple for
    several axes), or any reduction ``reduce(values) -> (B,)`` (e.g. the norm of a
    predicted vector). ``values(out)`` picks the Tensor from a structured output."""
    if (index is None) == (reduce is None):
        raise GradCamError(
            "regression(...): pass one of index= (a coordinate) or reduce= "
            "(a function of the output's values)."
        )
    index = index if isinstance(index, tuple) or index is None else (index,)

    def score(output):
        tensor = _pick(output, values, "values", "regression(...)")
        return reduce(tensor) if reduce is not None else tensor[(slice(None),) + tuple(index or ())]

    return _Target(f"regression({index if reduce is None else 'reduce'})", score)


def contrast(
    a: int | torch.Tensor,
    b: int | torch.Tensor,
    *,
    logits: Callable[[Any], torch.Tensor] | None = None,
) -> ScoreFn:
    """Class a's score minus class b's: what makes the model choose a over b."""

    def score(output):
        scores = _pick(output, logits, "logits", "contrast(...)")
        return scores[:, a] - scores[:, b]

    return _Target(f"contrast({a}, {b})", score)


def finer(
    a: int | torch.Tensor, similar: int = 3, *, logits: Callable[[Any], torch.Tensor] | None = None
) -> ScoreFn:
    """Class a's score minus the mean score of the ``similar`` classes the model scores
    closest to a in each example (Finer-CAM's comparison with confusable classes), or
    minus the mean of the classes listed in ``similar``."""

    def score(output):
        scores = _pick(output, logits, "logits", "finer(...)")
        if isinstance(similar, int):
            gap = (scores - scores[:, a : a + 1]).abs().detach()
            gap[:, a] = torch.inf
            nearest = gap.topk(similar, dim=1, largest=False).indices
            others = scores.gather(1, nearest)
        else:
            others = scores[:, list(similar)]
        return scores[:, a] - others.mean(1)

    return _Target(f"finer({a}, similar={similar})", score)
