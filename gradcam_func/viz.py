"""Pictures: a CAM laid over its image, and a grid of images by targets as a PNG.

Takes torch tensors or NumPy arrays. matplotlib (the ``viz`` extra) is imported only
inside the functions that need it.
"""

import numpy as np
import torch

from . import ops
from ._checks import GradCamError
from ._interpolate import interpolate

__all__ = ["overlay", "save_grid"]


def _as_hwc(image):
    """An image (3, H, W), (H, W, 3), (1, H, W) or (H, W) as float (H, W, 3) in [0, 1]."""
    image = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image,
                       dtype=np.float64)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise GradCamError(
            f"overlay(..., image=...): expected an image of shape (3, H, W), (H, W, 3) or "
            f"(H, W), got {image.shape}."
        )
    if image.max() > 1.0 or image.min() < 0.0:
        image = ops.normalize(image.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def overlay(cam, image, *, cmap="jet", alpha=0.5, normalize=True):
    """``cam`` coloured by ``cmap`` and blended over ``image``: (H, W, 3) floats in [0, 1].

    cam: (h, w) or (1, h, w), upsampled bilinearly to the image's (H, W); image: see
    ``_as_hwc``. normalize: scale the map to [0, 1] by its own min and max first
    (otherwise it is clipped to [0, 1]). alpha: the weight of the heatmap.
    """
    from matplotlib import colormaps

    rgb = _as_hwc(image)
    cam = torch.as_tensor(np.asarray(cam.detach().cpu() if isinstance(cam, torch.Tensor)
                                     else cam), dtype=torch.float64)
    if cam.ndim == 3 and cam.shape[0] == 1:
        cam = cam[0]
    if cam.ndim != 2:
        raise GradCamError(
            f"overlay(cam=...): expected one 2-D map of shape (h, w) or (1, h, w), got "
            f"{tuple(cam.shape)}. Index the CAM first, e.g. cams[k, b]."
        )
    cam = interpolate(cam[None, None], rgb.shape[:2], mode="bilinear")[0, 0].numpy()
    cam = ops.normalize(cam) if normalize else np.clip(cam, 0.0, 1.0)
    heat = colormaps[cmap](cam)[..., :3]
    return (1 - alpha) * rgb + alpha * heat


def save_grid(images, cams, path, titles=None, *, image_titles=None, cmap="jet", alpha=0.5,
              dpi=100):
    """A PNG with one row per image: the image, then its CAM for each target.

    images: (N, ...) images as ``overlay`` takes them; cams: (K, N, 1, h, w) or
    (K, N, h, w), as ``grad_cam(..., targets=...)`` returns them; titles: optional
    N rows of K strings; image_titles: optional N strings. Returns the path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k, n = cams.shape[:2]
    if len(images) != n:
        raise GradCamError(
            f"save_grid(images=..., cams=...): cams (K, N, ...) must have N = "
            f"{len(images)} images on axis 1, got shape {tuple(cams.shape)}."
        )
    figure, axes = plt.subplots(n, k + 1, figsize=(1.9 * (k + 1), 2.0 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(_as_hwc(images[i]))
        if image_titles is not None:
            axes[i, 0].set_title(image_titles[i], fontsize=8)
        for j in range(k):
            axes[i, j + 1].imshow(overlay(cams[j, i], images[i], cmap=cmap, alpha=alpha))
            if titles is not None:
                axes[i, j + 1].set_title(titles[i][j], fontsize=8)
        for axis in axes[i]:
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path
