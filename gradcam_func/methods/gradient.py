"""The gradient methods as pure, array-generic functions of (acts, grads).

Each ``*_from(acts, grads, *, relu=False, sum_channels=True)`` takes a layer's
activations and the gradients of one score at them, both (B, C, *S), and returns the
map (B, 1, *S) (or (B, C, *S) without channel summation), like ``ops.grad_cam_from``.
They differ only in how channels (or positions) are weighted:

- Grad-CAM (Selvaraju et al., 2017): w_c = mean_S g_c.
- Grad-CAM++ (Chattopadhay et al., 2018): w_c = sum_S alpha_c * relu(g_c), with
  alpha_c = g_c^2 / (2 g_c^2 + sum_S(A_c) g_c^3) (0 where the denominator is 0).
  The closed form assumes the score is the exponential of the logit, so the second and
  third derivatives are powers of the first; as in common implementations, the
  gradients of the score itself stand in for those of its exponential.
- XGradCAM (Fu et al., 2020): w_c = sum_S(g_c * A_c) / (sum_S A_c + eps).
- HiResCAM (Draelos & Carin, 2020): no pooling, the map is sum_c g_c * A_c.
- LayerCAM (Jiang et al., 2021): no pooling, the map is sum_c relu(g_c) * A_c.
- Element-wise Grad-CAM (pytorch-grad-cam's GradCAMElementWise): no pooling, the map
  is sum_c relu(g_c * A_c): each element's contribution, negatives dropped before the
  sum.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .._types import Array
from ..ops import relu as _relu
from ..ops import weight_activations

__all__ = [
    "gradcam_pp_weights",
    "xgradcam_weights",
    "gradcam_pp_from",
    "xgradcam_from",
    "hirescam_from",
    "layercam_from",
    "gradcam_elementwise_from",
]


def _spatial_sum(x):
    xp = array_namespace(x)
    if x.ndim <= 2:
        return x
    return xp.sum(x, axis=tuple(range(2, x.ndim)), keepdims=True)


def gradcam_pp_weights(acts: Array, grads: Array) -> Array:
    """Grad-CAM++ channel weights: (B, C, *S) -> (B, C, 1, ..., 1)."""
    xp = array_namespace(acts, grads)
    squared = grads * grads
    denominator = 2 * squared + _spatial_sum(acts) * squared * grads
    nonzero = denominator != 0
    alpha = xp.where(
        nonzero,
        squared / xp.where(nonzero, denominator, xp.ones_like(denominator)),
        xp.zeros_like(denominator),
    )
    return _spatial_sum(alpha * _relu(grads))


def xgradcam_weights(acts: Array, grads: Array, eps: float = 1e-07) -> Array:
    """XGradCAM channel weights: (B, C, *S) -> (B, C, 1, ..., 1)."""
    return _spatial_sum(grads * acts) / (_spatial_sum(acts) + eps)


def _finish(cam, relu):
    return _relu(cam) if relu else cam


def gradcam_pp_from(
    acts: Array, grads: Array, *, relu: bool = False, sum_channels: bool = True
) -> Array:
    """Grad-CAM++ map: (B, 1, *S), or (B, C, *S) with ``sum_channels=False``."""
    return _finish(weight_activations(gradcam_pp_weights(acts, grads), acts, sum_channels), relu)


def xgradcam_from(
    acts: Array, grads: Array, *, relu: bool = False, sum_channels: bool = True
) -> Array:
    """XGradCAM map: (B, 1, *S), or (B, C, *S) with ``sum_channels=False``."""
    return _finish(weight_activations(xgradcam_weights(acts, grads), acts, sum_channels), relu)


def hirescam_from(
    acts: Array, grads: Array, *, relu: bool = False, sum_channels: bool = True
) -> Array:
    """HiResCAM map, element-wise gradient times activation: (B, 1, *S) or (B, C, *S)."""
    return _finish(weight_activations(grads, acts, sum_channels), relu)


def layercam_from(
    acts: Array, grads: Array, *, relu: bool = False, sum_channels: bool = True
) -> Array:
    """LayerCAM map, positive gradient times activation: (B, 1, *S) or (B, C, *S)."""
    return _finish(weight_activations(_relu(grads), acts, sum_channels), relu)


def gradcam_elementwise_from(
    acts: Array, grads: Array, *, relu: bool = False, sum_channels: bool = True
) -> Array:
    """Element-wise Grad-CAM, sum_c relu(g_c * A_c): (B, 1, *S) or (B, C, *S)."""
    xp = array_namespace(acts, grads)
    contributions = _relu(grads * acts)
    return contributions if not sum_channels else xp.sum(contributions, axis=1, keepdims=True)
