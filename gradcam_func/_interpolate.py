"""Upsample a CAM to the input's size (Captum's ``LayerAttribution.interpolate``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._checks import GradCamError

__all__ = ["interpolate"]

_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}
_MODES = ("nearest", "nearest-exact", "area", "linear", "bilinear", "trilinear", "bicubic")


def interpolate(
    attr: torch.Tensor, size: int | Sequence[int], mode: str = "nearest"
) -> torch.Tensor:
    """``attr`` (B, C, *S) resized to (B, C, *size), for 1-D, 2-D and 3-D maps S.

    size: an int (every spatial axis) or a tuple with len(S) entries. mode: "nearest",
    "nearest-exact", "area", "bicubic" (2-D only), or "linear", "bilinear",
    "trilinear", which all mean the n-linear mode of the map's rank (align_corners
    False). Differentiable, and fine under torch.func transforms.
    """
    spatial = attr.ndim - 2
    if spatial not in _LINEAR:
        raise GradCamError(
            f"interpolate(attr=...): expected a CAM of shape (B, C, *S) with 1 to 3 spatial "
            f"axes, got shape {tuple(attr.shape)}."
        )
    size = (size,) * spatial if isinstance(size, int) else tuple(size)
    if len(size) != spatial:
        raise GradCamError(
            f"interpolate(..., size={size}): a CAM of shape {tuple(attr.shape)} has "
            f"{spatial} spatial axes, so size needs {spatial} entries."
        )
    if mode not in _MODES:
        raise GradCamError(f"interpolate(..., mode={mode!r}): expected one of {', '.join(_MODES)}.")
    if mode == "bicubic" and spatial != 2:
        raise GradCamError(
            f"interpolate(..., mode='bicubic'): bicubic needs a 2-D map, the CAM has "
            f"{spatial} spatial axes. Use mode='linear' or 'nearest'."
        )
    if mode in _LINEAR.values() or mode == "bicubic":
        mode = "bicubic" if mode == "bicubic" else _LINEAR[spatial]
        return F.interpolate(attr, size=size, mode=mode, align_corners=False)
    return F.interpolate(attr, size=size, mode=mode)
