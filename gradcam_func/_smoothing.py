"""Smoothing for any method: averages over noisy copies (SmoothGrad) or over test-time
augmentations (flips and brightness), each computed as one batched call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._cam import cam
from ._checks import GradCamError, as_tensor_tuple, check_flags
from ._targets import TopK
from ._types import CamResult, Inputs, Layers, Model, Target, Targets

__all__ = ["smooth_cam", "augmented_cam"]


def _repeat_target(target, copies):
    """A per-example target for ``copies`` stacked copies of the batch."""
    if isinstance(target, list):
        return target * copies
    if isinstance(target, torch.Tensor) and target.ndim == 1 and target.numel() > 1:
        return target.repeat(copies)
    return target


def _check_options(options, call):
    """The flags among ``cam``'s options, refused under this call's name if not bools."""
    flags = ("attribute_to_layer_input", "relu", "sum_channels")
    check_flags(call, **{name: options[name] for name in flags if name in options})


def _explain_copies(model, layer, batches, target, targets, options, call):
    """``cam`` on ``copies`` versions of the inputs in one call -> (copies, ...)."""
    copies = len(batches)
    stacked = tuple(torch.cat(parts) for parts in zip(*batches, strict=True))
    inputs = stacked if len(stacked) > 1 else stacked[0]
    if isinstance(targets, TopK):
        raise GradCamError(
            f"{call}(..., targets=top_k(k)): pass the classes explicitly, "
            "e.g. from grad_cam(..., targets=top_k(k)), so every copy "
            "explains the same classes."
        )
    if targets is not None:
        targets = [_repeat_target(t, copies) for t in targets]
    result = cam(model, layer, inputs, _repeat_target(target, copies), targets=targets, **options)
    axis = 0 if targets is None else 1
    return result.unflatten(axis, (copies, -1)), axis


def smooth_cam(
    model: Model,
    layer: Layers,
    inputs: Inputs,
    target: Target = None,
    *,
    targets: Targets = None,
    samples: int = 8,
    noise_level: float = 0.15,
    stdev: float | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> CamResult:
    """The mean CAM over ``samples`` noisy copies of the inputs (SmoothGrad, applied to
    any ``cam`` method, as SmoothGrad-CAM++ does for Grad-CAM++).

    Noise is N(0, sigma^2) per element with sigma = noise_level x (max - min) of each
    example (SmoothGrad's definition), or ``stdev`` in input units (Captum NoiseTunnel's
    ``stdevs``, torchcam's ``std``). All copies run as one batch of samples x B.
    options: everything ``cam`` takes (method, relu, ...). Returns what ``cam`` does.
    """
    call = "smooth_cam"
    _check_options(options, call)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise GradCamError(f"{call}(..., samples={samples!r}): expected a positive int.")
    xs = as_tensor_tuple(inputs, call)
    copies = []
    for _ in range(samples):
        noisy = []
        for x in xs:
            if stdev is None:
                span = x.flatten(1).amax(1) - x.flatten(1).amin(1)
                sigma = (noise_level * span).view(-1, *[1] * (x.ndim - 1))
            else:
                sigma = stdev
            noise = torch.randn(
                x.shape,
                generator=generator,
                dtype=x.dtype,
                device="cpu" if generator is None else generator.device,
            )
            noisy.append(x + sigma * noise.to(x.device))
        copies.append(noisy)
    result, axis = _explain_copies(model, layer, copies, target, targets, options, call)
    return result.mean(axis)


def augmented_cam(
    model: Model,
    layer: Layers,
    inputs: Inputs,
    target: Target = None,
    *,
    targets: Targets = None,
    flips: Sequence[bool] = (False, True),
    scales: Sequence[float] = (0.9, 1.0, 1.1),
    **options: Any,
) -> CamResult:
    """The mean CAM over test-time augmentations: each horizontal flip (the map flipped
    back before averaging) times each brightness scale, pytorch-grad-cam's
    ``aug_smooth`` (a flip and scales 0.9, 1, 1.1). One batch of all copies.

    inputs: images (B, C, *S), flipped along their last axis. Returns what ``cam`` does.
    """
    call = "augmented_cam"
    _check_options(options, call)
    xs = as_tensor_tuple(inputs, call)
    plan = [(flip, scale) for flip in flips for scale in scales]
    if not plan:
        raise GradCamError(
            f"{call}(..., flips={flips!r}, scales={scales!r}): expected at least one augmentation."
        )
    copies = [[(x.flip(-1) if flip else x) * scale for x in xs] for flip, scale in plan]
    result, axis = _explain_copies(model, layer, copies, target, targets, options, call)
    maps = [
        result.select(axis, i).flip(-1) if flip else result.select(axis, i)
        for i, (flip, _) in enumerate(plan)
    ]
    return torch.stack(maps).mean(0)
