"""Gradient-free methods: weights from forwards of perturbed copies, not gradients.

- Score-CAM (Wang et al., 2020): each channel, upsampled to the input and scaled to
  [0, 1], masks the input; the channel's weight is the target's score on the masked
  input. SS-CAM (Wang et al., 2020) averages the scores over masks with Gaussian noise
  added; IS-CAM (Naidu et al., 2020) over masks scaled by growing coefficients.
- Ablation-CAM (Desai and Ramaswamy, 2020): each channel of the layer's activation is
  ablated in turn; the weight is the relative drop of the score, ``(y - y_c) / y``.

All are ``sum_c w_c A_c``, like Grad-CAM with other weights. The masked inputs of all
examples run as batched forwards of ``batch_size`` copies under ``no_grad``, and every
target reads its scores from the same forwards. Ablation-CAM changes only the layer's
activation: it runs the model under ``vmap`` over the ablated channels, so the part
before the layer, which does not depend on the channel, runs once per batch of
channels and the part after it runs all of them as one batched call.

Conventions (``convention=``), where the libraries differ from the papers:

==================  ==================================================================
"paper"             Score-CAM: softmax probability of the class on the masked input
                    (callables: their value), no softmax over channels, masks
                    upsampled (bilinear, half-pixel centres) then scaled to [0, 1].
                    SS-/IS-CAM: the papers' formulas as torchcam writes them (below).
                    Ablation-CAM: ablated channels set to 0.
"pytorch-grad-cam"  Score-CAM: raw scores with a softmax over channels, masks upsampled
                    with align_corners=True then scaled with +1e-8 in the divisor.
                    Ablation-CAM: 0 if the example's smallest activation is 0, else
                    that minimum minus 1e7.
"torchcam"          Score-CAM, SS-CAM, IS-CAM: the increase of the raw score over the
                    clean input's, a softmax over channels; masks scaled to [0, 1] at
                    the layer's resolution, then upsampled.
==================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .._grad_cam import vmap_quietly
from .._interpolate import interpolate
from ..ops import normalize

__all__ = ["CONVENTIONS", "masking_weights", "ablation_weights"]

CONVENTIONS = {
    "scorecam": ("paper", "pytorch-grad-cam", "torchcam"),
    "sscam": ("paper", "torchcam"),
    "iscam": ("paper", "torchcam"),
    "ablationcam": ("paper", "pytorch-grad-cam"),
}


def _masks(acts, size, convention):
    """(B, C, *S) masks in [0, 1] from channels-first activations (B, C, *s)."""
    if convention == "torchcam":
        return interpolate(normalize(acts), size, "linear")
    if convention == "pytorch-grad-cam":
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[acts.ndim - 2]
        up = F.interpolate(acts, size=size, mode=mode, align_corners=True)
        low = up.flatten(2).min(-1).values.view(*up.shape[:2], *[1] * (up.ndim - 2))
        high = up.flatten(2).max(-1).values.view(*up.shape[:2], *[1] * (up.ndim - 2))
        return (up - low) / (high - low + 1e-8)
    return normalize(interpolate(acts, size, "linear"))


def _sample_scales(method, samples):
    """Per sample: the mask's scale (IS-CAM's growing coefficients; 1 otherwise)."""
    if method == "iscam":
        return torch.cumsum(torch.arange(1, samples + 1) / samples, 0)
    return torch.ones(samples)


def masking_weights(
    forward: Callable[[torch.Tensor, torch.Tensor], Any],
    inputs: torch.Tensor,
    acts: torch.Tensor,
    target_scores: Any,
    *,
    method: str,
    convention: str,
    samples: int,
    noise: float,
    batch_size: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Score-CAM / SS-CAM / IS-CAM channel weights: (K, B, C).

    forward: ``(masked, examples) -> output`` for a batch of masked inputs, copies of
    ``examples`` (no_grad, buffers untouched); inputs: the masked input (B, C_in, *S);
    acts: channels-first (B, C, *s); target_scores: a ``TargetScores``. Runs
    B * C * samples masked copies, ``batch_size`` at a time.
    """
    batch, channels = acts.shape[:2]
    masks = _masks(acts, tuple(inputs.shape[2:]), convention)  # (B, C, *S)
    scales = _sample_scales(method, samples).to(inputs)
    rows = batch * channels * samples
    index = torch.arange(rows, device=inputs.device)
    bs, cs, ss = index // (channels * samples), (index // samples) % channels, index % samples
    probability = convention == "paper" and method == "scorecam"
    chunks = []
    for start in range(0, rows, batch_size):
        row = slice(start, start + batch_size)
        mask = masks[bs[row], cs[row]].unsqueeze(1) * scales[ss[row]].view(
            -1, *[1] * (inputs.ndim - 1)
        )
        if method == "sscam":
            mask = mask + noise * torch.randn(
                mask.shape, generator=generator, dtype=mask.dtype, device="cpu"
            ).to(mask.device)
        chunks.append(
            target_scores(
                forward(inputs[bs[row]] * mask, bs[row]), bs[row], probability=probability
            )
        )
    scores = torch.cat(chunks, 1).reshape(-1, batch, channels, samples).mean(-1)  # (K, B, C)
    if method == "scorecam" and convention == "paper":
        return scores
    if convention == "torchcam" or method != "scorecam":
        examples = torch.arange(batch, device=inputs.device)
        clean = target_scores(forward(inputs, examples), examples)
        scores = scores - clean[..., None]
    return scores.softmax(-1)


def ablation_weights(
    head: Callable[[torch.Tensor], torch.Tensor],
    acts: torch.Tensor,
    channel_axis: int,
    clean: torch.Tensor,
    *,
    convention: str,
    batch_size: int | None,
) -> torch.Tensor:
    """Ablation-CAM channel weights ``(y - y_c) / y``: (K, B, C); 0 where y = 0.

    head: ``act -> (K, B) scores`` with the layer's output replaced by ``act`` (in the
    layer's own layout); acts: that output (B, ...); channel_axis: where its channels
    are; clean: the (K, B) scores of the unchanged model. Runs under ``vmap`` over the
    channels, ``batch_size`` channels per call.
    """
    axis = channel_axis % acts.ndim
    channels = acts.shape[axis]
    if convention == "paper":
        value = torch.zeros(acts.shape[0], dtype=acts.dtype, device=acts.device)
    else:  # pytorch-grad-cam: very negative, so a following ReLU zeroes it too
        low = acts.flatten(1).min(1).values
        value = torch.where(low == 0, torch.zeros_like(low), low - 1e7)
    shape = [1] * acts.ndim
    shape[axis] = channels
    value = value.view(-1, *[1] * (acts.ndim - 1))

    def ablated_scores(channel):
        chosen = (torch.arange(channels, device=acts.device) == channel).view(shape)
        return head(torch.where(chosen, value, acts))

    ablated = vmap_quietly(ablated_scores, chunk_size=batch_size)(
        torch.arange(channels, device=acts.device)
    )  # (C, K, B)
    ablated = ablated.permute(1, 2, 0)
    clean = clean[..., None]
    # the relative drop is undefined for a score of 0: such a target gets weights 0
    safe = torch.where(clean == 0, torch.ones_like(clean), clean)
    return torch.where(clean == 0, torch.zeros_like(ablated), (clean - ablated) / safe)
