"""Several layers' CAMs fused into one map at the input's size."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import GradCamError
from ._interpolate import interpolate
from .ops import normalize, relu

__all__ = ["fuse_layers"]


def fuse_layers(
    cams: Sequence[torch.Tensor], size: int | Sequence[int], how: str = "mean"
) -> torch.Tensor:
    """One map from CAMs of several layers: each ReLU'd, upsampled (n-linear) to
    ``size`` and scaled to [0, 1] per map, then combined.

    cams: a list of (B, 1, *s_l) (or (K, B, 1, *s_l)) maps, as ``cam(model, [l1, l2,
    ...], ...)`` returns them. how: "mean" (the mean, scaled to [0, 1] again, as
    pytorch-grad-cam fuses several target layers) or "max" (the element-wise maximum,
    the combination LayerCAM uses across stages). Returns (B, 1, *size) (or
    (K, B, 1, *size)).
    """
    if not isinstance(cams, (list, tuple)) or not cams:
        raise GradCamError(
            "fuse_layers(cams=...): expected a non-empty list of CAMs, one "
            "per layer, as cam(model, [layer, ...], ...) returns them."
        )
    if how not in ("mean", "max"):
        raise GradCamError(f"fuse_layers(..., how={how!r}): expected 'mean' or 'max'.")
    if isinstance(size, int) or not all(isinstance(n, int) for n in size):
        raise GradCamError(
            f"fuse_layers(..., size={size!r}): expected the spatial size as "
            "a tuple, e.g. (224, 224) (its length says how many axes)."
        )
    spatial = len(size)
    lead = cams[0].shape[: -spatial - 1]
    scaled = []
    for cam in cams:
        flat = cam.reshape(-1, 1, *cam.shape[-spatial:])  # (N, 1, *s)
        scaled.append(normalize(interpolate(relu(flat), tuple(size), "linear")))
    stacked = torch.stack(scaled)
    fused = normalize(stacked.mean(0)) if how == "mean" else stacked.amax(0)
    return fused.reshape(*lead, 1, *size)
