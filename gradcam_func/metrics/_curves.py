"""Perturbation curves: deletion and insertion (Petsiuk et al., 2018), and ROAD's
most- and least-relevant-first removal with noisy linear imputation (Rong et al., 2022).

The inputs' positions (pixels, or patches) are ranked by the CAM upsampled to the input;
step i of S replaces the top ``i/S`` of them. Every (target, example, step) is one
perturbed copy of an input, built on the fly and scored in batched forwards of
``batch_size`` copies under ``no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .._checks import GradCamError, _describe
from .._types import Target, Targets
from ._imputation import noisy_linear_imputation
from ._inputs import Scorer, cam_stack, check_image_batch, check_positive, grid_rows

__all__ = ["deletion", "insertion", "road"]

DEFAULT_BATCH_SIZE = 64


def _ranks(cams, patch_size, call):
    """(K, B, *S) rank of each position (0 = highest CAM), and the number of units.

    With ``patch_size`` p the CAM is averaged over p x p patches, and all positions of a
    patch share the patch's rank. Ties are broken by position (a stable sort).
    """
    k, b, *size = cams.shape
    flat = cams.flatten(0, 1)[:, None]  # (K*B, 1, *S)
    if patch_size is not None:
        check_positive(call, "patch_size", patch_size)
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(size)]
        flat = pool(flat, patch_size, ceil_mode=True)
    grid = flat.shape[2:]
    order = flat.flatten(1).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    ranks = ranks.reshape(-1, *grid)
    if patch_size is not None:
        for axis in range(len(size)):
            ranks = ranks.repeat_interleave(patch_size, dim=axis + 1)
        ranks = ranks[(slice(None),) + tuple(slice(0, n) for n in size)]
    return ranks.reshape(k, b, *size), order.shape[1]


def _gaussian_blur(x, sigma):
    """Each spatial axis of x (B, C, *S) blurred by a Gaussian of ``sigma`` pixels."""
    for axis in range(2, x.ndim):
        n = x.shape[axis]
        radius = min(int(3 * sigma), n - 1)
        offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = (kernel / kernel.sum()).view(1, 1, -1)
        moved = x.movedim(axis, -1)
        rows = moved.reshape(-1, 1, n)
        rows = F.conv1d(F.pad(rows, (radius, radius), mode="reflect"), kernel)
        x = rows.reshape(moved.shape).movedim(-1, axis)
    return x


def baseline_of(baseline, inputs, call):
    """The baseline (B, C, *S): "zero", "mean" (per example and channel), "blur"
    (Gaussian, sigma 5 pixels, as Petsiuk et al.'s insertion canvas), a number, or a
    Tensor broadcastable to the inputs."""
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(inputs)
        if baseline == "mean":
            return inputs.mean(tuple(range(2, inputs.ndim)), keepdim=True).expand_as(inputs)
        if baseline == "blur":
            return _gaussian_blur(inputs, 5.0)
    elif isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(inputs, float(baseline))
    elif isinstance(baseline, torch.Tensor):
        try:
            return baseline.to(inputs).expand_as(inputs)
        except RuntimeError:
            pass
    raise GradCamError(
        f"{call}(..., baseline=...): expected 'zero', 'mean', 'blur', a number, or a "
        f"Tensor broadcastable to the inputs {tuple(inputs.shape)}; got "
        f"{_describe(baseline)}."
    )


def _curve(
    call,
    model,
    inputs,
    cams,
    target,
    targets,
    steps,
    baseline,
    batch_size,
    patch_size,
    additional_forward_args,
    reveal,
):
    inputs = check_image_batch(inputs, call)
    check_positive(call, "steps", steps)
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    check_positive(call, "batch_size", batch_size)
    scorer = Scorer(model, inputs, target, targets, call, additional_forward_args)
    cams = _matching(cams, inputs, scorer, call)
    ranks, units = _ranks(cams[:, :, 0], patch_size, call)
    base = baseline_of(baseline, inputs, call)
    k, b = cams.shape[:2]
    ks, bs, ii = grid_rows(k, b, steps + 1, device=inputs.device)
    counts = (ii * units) // steps  # units replaced at each step: 0 ... all
    spatial = (1,) * (inputs.ndim - 2)

    def perturbed(start, stop):
        row = slice(start, stop)
        replaced = ranks[ks[row], bs[row]] < counts[row].view(-1, *spatial)
        replaced = replaced.unsqueeze(1)  # over channels
        if reveal:
            return torch.where(replaced, inputs[bs[row]], base[bs[row]])
        return torch.where(replaced, base[bs[row]], inputs[bs[row]])

    curves = scorer(perturbed, ks, bs, batch_size).reshape(k, b, steps + 1)
    area = torch.trapezoid(curves, dx=1.0 / steps, dim=-1)
    return (curves, area) if scorer.stacked else (curves[0], area[0])


def _matching(cams, inputs, scorer, call):
    cams, _ = cam_stack(
        cams, inputs.shape[0], inputs.shape[2:], scorer.stacked, call, device=inputs.device
    )
    if cams.shape[0] != len(scorer.targets):
        raise GradCamError(
            f"{call}(..., cams=..., targets=...): {len(scorer.targets)} targets but "
            f"{cams.shape[0]} stacked CAMs; pass one CAM per target, (K, B, 1, *s)."
        )
    return cams


def deletion(
    model: Callable[..., Any],
    inputs: torch.Tensor,
    cams: Any,
    target: Target = None,
    *,
    targets: Targets = None,
    steps: int = 20,
    baseline: str | float | torch.Tensor = "zero",
    batch_size: int | None = None,
    patch_size: int | None = None,
    additional_forward_args: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion curve: the target's score as the CAM's top positions are removed.

    inputs: (B, C, *S); cams: (B, 1, *s) (or (K, B, 1, *s) with ``targets``), upsampled
    to S inside. ``curves[..., i]`` is the score after the top ``i/steps`` of the
    positions are set to ``baseline``: ``[..., 0]`` the input's, ``[..., -1]`` the
    all-baseline input's. Scores: softmax probability for index targets, the value
    for callables. Returns ``(curves, auc)``: (B, steps + 1) and (B,) (with a leading
    K for ``targets``); auc by the trapezoid rule over [0, 1]. Lower is better.
    batch_size: perturbed copies per forward (default 64); patch_size: remove p x p
    patches instead of pixels.
    """
    return _curve(
        "deletion",
        model,
        inputs,
        cams,
        target,
        targets,
        steps,
        baseline,
        batch_size,
        patch_size,
        additional_forward_args,
        reveal=False,
    )


def insertion(
    model: Callable[..., Any],
    inputs: torch.Tensor,
    cams: Any,
    target: Target = None,
    *,
    targets: Targets = None,
    steps: int = 20,
    baseline: str | float | torch.Tensor = "blur",
    batch_size: int | None = None,
    patch_size: int | None = None,
    additional_forward_args: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Insertion curve: the score as the CAM's top positions are revealed on a baseline.

    Like ``deletion``, starting from the baseline: ``curves[..., 0]`` is the
    baseline's score, ``curves[..., -1]`` the input's. Higher auc is better.
    """
    return _curve(
        "insertion",
        model,
        inputs,
        cams,
        target,
        targets,
        steps,
        baseline,
        batch_size,
        patch_size,
        additional_forward_args,
        reveal=True,
    )


def road(
    model: Callable[..., Any],
    inputs: torch.Tensor,
    cams: Any,
    target: Target = None,
    *,
    targets: Targets = None,
    percentages: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    order: str = "morf",
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    additional_forward_args: Any = None,
) -> torch.Tensor:
    """ROAD: the score after removing a share of pixels, imputed so the removal leaks
    no shape (noisy linear imputation, Rong et al. 2022).

    inputs: (B, C, H, W) images; cams: (B, 1, h, w) or (K, B, 1, h, w). order "morf"
    removes the most relevant pixels first (a faithful CAM drops fast), "lerf" the least
    relevant first (it should stay high). Returns (B, P) (or (K, B, P)) scores, one per
    percentage; softmax probability for index targets. noise: the standard deviation
    of the Gaussian noise added to imputed values; generator: for replayable noise.
    """
    call = "road"
    inputs = check_image_batch(inputs, call)
    if inputs.ndim != 4:
        raise GradCamError(
            f"road(model, inputs=...): ROAD's imputation is defined for "
            f"images (B, C, H, W), got shape {tuple(inputs.shape)}."
        )
    if order not in ("morf", "lerf"):
        raise GradCamError(
            f"road(..., order={order!r}): expected 'morf' (most relevant "
            "first) or 'lerf' (least relevant first)."
        )
    if not percentages or not all(0 < p < 1 for p in percentages):
        raise GradCamError(
            f"road(..., percentages={percentages!r}): expected shares "
            "strictly between 0 and 1, e.g. (0.1, 0.2, ..., 0.9)."
        )
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    check_positive(call, "batch_size", batch_size)
    scorer = Scorer(model, inputs, target, targets, call, additional_forward_args)
    cams = _matching(cams, inputs, scorer, call)
    ranks, units = _ranks(cams[:, :, 0], None, call)
    k, b = cams.shape[:2]
    ks, bs, pp = grid_rows(k, b, len(percentages), device=inputs.device)
    counts = torch.tensor([round(p * units) for p in percentages], device=inputs.device)[pp]

    def imputed(start, stop):
        row = slice(start, stop)
        rank = ranks[ks[row], bs[row]]
        n = counts[row].view(-1, 1, 1)
        removed = rank < n if order == "morf" else rank >= units - n
        return noisy_linear_imputation(inputs[bs[row]], removed, noise=noise, generator=generator)

    scores = scorer(imputed, ks, bs, batch_size).reshape(k, b, len(percentages))
    return scores if scorer.stacked else scores[0]
