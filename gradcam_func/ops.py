"""Pure Grad-CAM maths, generic over array libraries.

Every function takes torch, NumPy or JAX arrays (through ``array_api_compat``) and
returns an array of the same library. Nothing here imports torch or jax.

Shape letters: B batch, C channels, S spatial (any number of axes, possibly none).
"""

from __future__ import annotations

from array_api_compat import array_namespace

from ._types import Array

__all__ = ["pool_gradients", "weight_activations", "relu", "grad_cam_from", "normalize"]


def pool_gradients(grads: Array) -> Array:
    """Mean of the gradients over the spatial axes.

    grads: (B, C, *S). Returns (B, C, 1, ..., 1). An array with ndim <= 2 is returned
    unchanged, as Captum does for fully-connected layers.
    """
    xp = array_namespace(grads)
    if grads.ndim <= 2:
        return grads
    return xp.mean(grads, axis=tuple(range(2, grads.ndim)), keepdims=True)


def weight_activations(weights: Array, acts: Array, sum_channels: bool = True) -> Array:
    """Activations scaled by per-channel weights.

    weights: broadcastable to acts, usually (B, C, 1, ..., 1); acts: (B, C, *S).
    Returns (B, 1, *S) summed over channels, or (B, C, *S) with ``sum_channels=False``.
    """
    xp = array_namespace(weights, acts)
    scaled = weights * acts
    if not sum_channels:
        return scaled
    return xp.sum(scaled, axis=1, keepdims=True)


def relu(x: Array) -> Array:
    """max(x, 0) element-wise, with gradient 0 at 0 (as ``torch.nn.functional.relu``)."""
    xp = array_namespace(x)
    return xp.where(x > 0, x, xp.zeros_like(x))


def grad_cam_from(
    acts: Array, grads: Array, *, relu: bool = False, sum_channels: bool = True
) -> Array:
    """Grad-CAM from a layer's activations and the gradients of a score at them.

    acts, grads: (B, C, *S). Returns (B, 1, *S), or (B, C, *S) with
    ``sum_channels=False``; negative values are zeroed when ``relu=True``.
    """
    cam = weight_activations(pool_gradients(grads), acts, sum_channels=sum_channels)
    return _relu(cam) if relu else cam


_relu = relu


def normalize(cams: Array, eps: float = 1e-12) -> Array:
    """Each map scaled to [0, 1] by its own min and max.

    cams: (B, C, *S), normalized over S for each (b, c); an array with ndim <= 2 is
    one map, normalized over all its axes. A constant map becomes all zeros rather
    than dividing by zero.
    """
    xp = array_namespace(cams)
    axes = tuple(range(2, cams.ndim)) if cams.ndim > 2 else tuple(range(cams.ndim))
    low = xp.min(cams, axis=axes, keepdims=True)
    span = xp.max(cams, axis=axes, keepdims=True) - low
    return (cams - low) / xp.where(span > eps, span, xp.ones_like(span))
