"""Localisation: does the CAM point at the object?

``pointing_game`` (Zhang et al., 2016): a hit when the CAM's maximum, at the mask's
resolution, lies in the object's mask, or within ``tolerance`` pixels of it (TorchRay's
15-pixel rule). ``energy_pointing_game`` (Wang et al., 2020, Score-CAM): the share of
the CAM's positive mass that falls inside the mask. Boxes become masks by ``box_masks``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import GradCamError, _describe
from ._inputs import cam_stack

__all__ = ["pointing_game", "energy_pointing_game", "box_masks"]


def box_masks(boxes: torch.Tensor | Sequence[Sequence[float]], size: Sequence[int]) -> torch.Tensor:
    """Masks (B, H, W) from boxes (B, 4) or (B, n, 4), each ``(x0, y0, x1, y1)`` in
    pixels, half-open; several boxes per example are united. size: (H, W)."""
    boxes = torch.as_tensor(boxes)
    if boxes.ndim == 2:
        boxes = boxes[:, None]
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise GradCamError(
            f"box_masks(boxes=...): expected boxes (B, 4) or (B, n, 4) as (x0, y0, x1, "
            f"y1), got shape {tuple(boxes.shape)}."
        )
    height, width = size
    x0, y0, x1, y1 = boxes.unbind(-1)
    if (
        (x0 < 0).any()
        or (y0 < 0).any()
        or (x1 > width).any()
        or (y1 > height).any()
        or (x1 <= x0).any()
        or (y1 <= y0).any()
    ):
        raise GradCamError(
            f"box_masks(boxes=..., size={tuple(size)}): every box must lie inside the "
            f"{height} x {width} image with x0 < x1 and y0 < y1, got "
            f"{boxes.reshape(-1, 4).tolist()[:4]}."
        )
    ys = torch.arange(height, device=boxes.device).view(1, 1, -1, 1)
    xs = torch.arange(width, device=boxes.device).view(1, 1, 1, -1)
    inside = (
        (xs >= x0[..., None, None])
        & (xs < x1[..., None, None])
        & (ys >= y0[..., None, None])
        & (ys < y1[..., None, None])
    )
    return inside.any(1)


def _masks_and_cams(cams, masks, call):
    """masks as bool (B, *S), the CAMs (K, B, *S) at their size, and whether stacked."""
    masks = torch.as_tensor(masks)
    if masks.ndim >= 3 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim < 2 or masks.ndim > 4:
        raise GradCamError(
            f"{call}(..., masks=...): expected masks (B, *S), got {_describe(masks)}."
        )
    masks = masks.bool()
    grid, stacked = cam_stack(
        cams, masks.shape[0], masks.shape[1:], None, call, device=masks.device
    )
    return masks, grid[:, :, 0], stacked


def pointing_game(cams: torch.Tensor, masks: torch.Tensor, *, tolerance: int = 0) -> torch.Tensor:
    """Hits (B,) bool, or (K, B) for stacked CAMs (K, B, 1, *s).

    cams: CAMs of any source, upsampled (n-linear) to the masks' size; masks: (B, *S)
    bool (or 0/1), one object mask per example. With ``tolerance=0`` a hit is a maximum
    inside the mask; with ``tolerance=t > 0``, one whose Euclidean distance to the
    nearest mask pixel is strictly less than t. Ties: the first maximum in row-major
    order.
    """
    call = "pointing_game"
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance < 0:
        raise GradCamError(
            f"{call}(..., tolerance={tolerance!r}): expected a number >= 0 of pixels."
        )
    masks, grid, stacked = _masks_and_cams(cams, masks, call)
    k, b = grid.shape[:2]
    size = masks.shape[1:]
    peak = grid.flatten(2).argmax(2)  # (K, B)
    coords = torch.stack(torch.unravel_index(peak, size), -1).to(torch.float64)  # (K, B, d)
    if tolerance == 0:
        hits = masks.flatten(1).gather(1, peak.T).T
    else:
        axes = torch.meshgrid(
            *(torch.arange(n, dtype=torch.float64, device=masks.device) for n in size),
            indexing="ij",
        )
        positions = torch.stack(axes, -1).reshape(-1, len(size))  # (P, d)
        distance = torch.cdist(
            coords.reshape(k * b, 1, -1), positions.expand(k * b, -1, -1)
        ).reshape(k, b, -1)
        distance = distance.where(masks.flatten(1)[None], torch.inf)
        hits = distance.min(-1).values < tolerance
    return hits if stacked else hits[0]


def energy_pointing_game(cams: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The share of each CAM's positive mass inside its mask: (B,) or (K, B) in [0, 1].

    cams upsampled (n-linear) to the masks' size; a CAM with no positive mass scores 0.
    """
    masks, grid, stacked = _masks_and_cams(cams, masks, "energy_pointing_game")
    positive = grid.clamp_min(0).flatten(2)
    inside = (positive * masks.flatten(1)[None]).sum(-1)
    total = positive.sum(-1)
    share = inside / total.where(total > 0, torch.ones_like(total))
    return share if stacked else share[0]
