"""Upsample a CAM to the input's size (Captum's ``LayerAttribution.interpolate``)."""

import torch.nn.functional as F

__all__ = ["interpolate"]


def interpolate(attr, size, mode="nearest"):
    """``attr`` (B, C, *S) resized to ``size`` (a tuple with len(S) entries).

    mode: "nearest", "area", or "linear"/"bilinear"/"bicubic"/"trilinear" as
    ``torch.nn.functional.interpolate`` takes them (the linear modes with
    ``align_corners=False``). Works for 1-D, 2-D and 3-D CAMs.
    """
    return F.interpolate(attr, size=size, mode=mode)
