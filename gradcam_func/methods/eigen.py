"""The first principal component of a layer's maps: Eigen-CAM and EigenGrad-CAM.

Eigen-CAM (Muhammad and Yeasin, 2020) projects each example's activations, viewed as
S positions of C features, on their first right singular vector: the direction along
which the positions vary most. EigenGrad-CAM (pytorch-grad-cam's) does the same with
the gradient-weighted activations ``grads * acts``. A singular vector's sign is
arbitrary; gradcam_func picks the one whose map agrees (non-negative inner product)
with the mean of the channels' maps, so the map is reproducible across SVD
implementations and positive where the channels are, on average.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .._types import Array
from ..ops import relu as _relu

__all__ = ["first_component", "eigencam_from", "eigengradcam_from"]


def first_component(values: Array, *, center: bool = False, fix_sign: bool = True) -> Array:
    """Projection of each example's positions on its first principal direction.

    values: (B, C, *S). Returns (B, 1, *S). center: subtract each feature's mean over
    the positions first (pytorch-grad-cam does; the paper does not). fix_sign: flip the
    projection to agree with the channels' mean map (else the SVD's sign is kept).
    """
    xp = array_namespace(values)
    batch, channels = values.shape[:2]
    matrix = xp.permute_dims(xp.reshape(values, (batch, channels, -1)), (0, 2, 1))  # (B, S, C)
    mean_map = xp.mean(matrix, axis=2)  # (B, S)
    if center:
        matrix = matrix - xp.mean(matrix, axis=1, keepdims=True)
    _, _, vh = xp.linalg.svd(matrix, full_matrices=False)
    projection = xp.sum(matrix * vh[:, :1, :], axis=2)  # (B, S)
    if fix_sign:
        agreement = xp.sum(projection * mean_map, axis=1, keepdims=True)
        projection = xp.where(agreement < 0, -projection, projection)
    return xp.reshape(projection, (batch, 1, *values.shape[2:]))


def eigencam_from(
    acts: Array, *, relu: bool = False, center: bool = False, fix_sign: bool = True
) -> Array:
    """Eigen-CAM: the activations' first principal component, (B, C, *S) -> (B, 1, *S).

    Needs no target: with ``targets=``, every target gets the same map.
    """
    cam = first_component(acts, center=center, fix_sign=fix_sign)
    return _relu(cam) if relu else cam


def eigengradcam_from(
    acts: Array,
    grads: Array,
    *,
    relu: bool = False,
    center: bool = True,
    fix_sign: bool = True,
) -> Array:
    """EigenGrad-CAM: the first principal component of ``grads * acts``: (B, 1, *S).

    Centered by default, as pytorch-grad-cam (which introduced it) computes it.
    """
    cam = first_component(grads * acts, center=center, fix_sign=fix_sign)
    return _relu(cam) if relu else cam
