"""Pictures: a CAM laid over its image, a grid of images by targets, a 1-D CAM under
its signal, a volume's CAM as slices, and a video's as frames or an animated GIF.

Takes torch tensors or NumPy arrays. matplotlib (the ``viz`` extra) is imported only
inside the functions that need it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import ops
from ._checks import GradCamError, check_flags
from ._interpolate import interpolate

__all__ = ["overlay", "save_grid", "save_signal", "save_volume", "save_video"]


def _as_hwc(image):
    """An image (3, H, W), (H, W, 3), (1, H, W) or (H, W) as float (H, W, 3) in [0, 1]."""
    image = np.asarray(
        image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float64
    )
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


def overlay(
    cam: Any, image: Any, *, cmap: str = "jet", alpha: float = 0.5, normalize: bool = True
) -> np.ndarray:
    """``cam`` coloured by ``cmap`` and blended over ``image``: (H, W, 3) floats in [0, 1].

    cam: (h, w) or (1, h, w), upsampled bilinearly to the image's (H, W); image: see
    ``_as_hwc``. normalize: scale the map to [0, 1] by its own min and max first
    (otherwise it is clipped to [0, 1]). alpha: the weight of the heatmap.
    """
    from matplotlib import colormaps

    check_flags("overlay", normalize=normalize)
    rgb = _as_hwc(image)
    cam = torch.as_tensor(
        np.asarray(cam.detach().cpu() if isinstance(cam, torch.Tensor) else cam),
        dtype=torch.float64,
    )
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


def save_grid(
    images: Any,
    cams: Any,
    path: str | os.PathLike[str],
    titles: Sequence[Sequence[str]] | None = None,
    *,
    image_titles: Sequence[str] | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    dpi: int = 100,
) -> str | os.PathLike[str]:
    """A PNG with one row per image: the image, then its CAM for each target.

    images: (N, ...) images as ``overlay`` takes them; cams: (K, N, 1, h, w) or
    (K, N, h, w), as ``grad_cam(..., targets=...)`` returns them; titles: optional
    N rows of K strings; image_titles: optional N strings. Returns the path.
    """
    plt = _pyplot("save_grid")
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


def _pyplot(call):
    """matplotlib.pyplot on the file-only Agg backend, or an ImportError naming the extra."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            f"gradcam_func.viz.{call} draws with matplotlib; install it with "
            "pip install 'gradcam_func[viz]' (or pip install matplotlib)."
        ) from error
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _numpy(value):
    return np.asarray(
        value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64
    )


def save_signal(
    signal: Any,
    cam: Any,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    cmap: str = "jet",
) -> str | os.PathLike[str]:
    """A 1-D CAM drawn under its signal: the signal's channels as lines over a colour
    band of the CAM (upsampled linearly to the signal's length). Returns the path.

    signal: (C, T) or (T,); cam: (1, t) or (t,).
    """
    plt = _pyplot("save_signal")
    signal = _numpy(signal)
    signal = signal[None] if signal.ndim == 1 else signal
    cam = torch.as_tensor(_numpy(cam)).reshape(1, 1, -1)
    if signal.ndim != 2:
        raise GradCamError(f"save_signal(signal=...): expected (C, T) or (T,), got {signal.shape}.")
    band = ops.normalize(interpolate(cam, signal.shape[1], "linear")[0, 0].numpy())
    figure, axis = plt.subplots(figsize=(8, 2.4))
    low, high = signal.min(), signal.max()
    axis.imshow(
        band[None],
        aspect="auto",
        cmap=cmap,
        alpha=0.45,
        extent=(0, signal.shape[1], low, high),
        origin="lower",
    )
    for channel in signal:
        axis.plot(np.arange(signal.shape[1]) + 0.5, channel, color="black", linewidth=1)
    axis.set(xlim=(0, signal.shape[1]), ylim=(low, high), xlabel="time step", title=title or "")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_volume(
    volume: Any,
    cam: Any,
    path: str | os.PathLike[str],
    *,
    axis: int = 0,
    slices: int = 8,
    cmap: str = "jet",
    alpha: float = 0.5,
) -> str | os.PathLike[str]:
    """A 3-D CAM over its volume as a row of slices along ``axis``. Returns the path.

    volume: (D, H, W) (or (1, D, H, W)); cam: (1, d, h, w) or (d, h, w), upsampled
    (trilinearly) to the volume first. ``slices`` evenly spaced slices are drawn.
    """
    plt = _pyplot("save_volume")
    volume = _numpy(volume)
    volume = volume[0] if volume.ndim == 4 else volume
    if volume.ndim != 3:
        raise GradCamError(f"save_volume(volume=...): expected (D, H, W), got {volume.shape}.")
    cam = torch.as_tensor(_numpy(cam))
    cam = cam[None] if cam.ndim == 3 else cam
    cam = interpolate(cam[None], volume.shape, "linear")[0, 0].numpy()
    picks = np.linspace(0, volume.shape[axis] - 1, min(slices, volume.shape[axis])).round()
    figure, axes = plt.subplots(1, len(picks), figsize=(1.6 * len(picks), 1.8), squeeze=False)
    for panel, index in zip(axes[0], picks.astype(int), strict=True):
        panel.imshow(
            overlay(np.take(cam, index, axis), np.take(volume, index, axis), cmap=cmap, alpha=alpha)
        )
        panel.set_title(f"slice {index}", fontsize=8)
        panel.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_video(
    frames: Any,
    cams: Any,
    path: str | os.PathLike[str],
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    fps: int = 4,
) -> str | os.PathLike[str]:
    """A video's CAM frame by frame: an animated GIF for a ``.gif`` path, else a strip
    of frames as a PNG. Returns the path.

    frames: (T, 3, H, W) or (3, T, H, W) as a video model takes one clip; cams:
    (1, t, h, w) or (t, h, w), upsampled (trilinearly) to the clip first.
    """
    plt = _pyplot("save_video")
    frames = _numpy(frames)
    if frames.ndim == 4 and frames.shape[0] in (1, 3) and frames.shape[1] not in (1, 3):
        frames = frames.transpose(1, 0, 2, 3)  # (C, T, H, W) -> (T, C, H, W)
    if frames.ndim != 4:
        raise GradCamError(
            f"save_video(frames=...): expected (T, C, H, W) or (C, T, H, W), got {frames.shape}."
        )
    cams = torch.as_tensor(_numpy(cams))
    cams = cams[None] if cams.ndim == 3 else cams
    cams = interpolate(cams[None], (frames.shape[0], *frames.shape[2:]), "linear")[0, 0]
    cams = ops.normalize(cams.numpy()[None, None])[0, 0]  # one scale for the whole clip
    pictures = [
        overlay(cam, frame, cmap=cmap, alpha=alpha, normalize=False)
        for cam, frame in zip(cams, frames, strict=True)
    ]
    if str(path).endswith(".gif"):
        from matplotlib import animation

        figure = plt.figure(figsize=(2.5, 2.5))
        shown = plt.imshow(pictures[0])
        plt.axis("off")
        movie = animation.FuncAnimation(
            figure, lambda i: shown.set_data(pictures[i]), frames=len(pictures)
        )
        movie.save(os.fspath(path), writer=animation.PillowWriter(fps=fps))
        plt.close(figure)
        return path
    figure, axes = plt.subplots(1, len(pictures), figsize=(1.6 * len(pictures), 1.8), squeeze=False)
    for i, (panel, picture) in enumerate(zip(axes[0], pictures, strict=True)):
        panel.imshow(picture)
        panel.set_title(f"frame {i}", fontsize=8)
        panel.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
