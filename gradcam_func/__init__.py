"""Grad-CAM as pure functions on ``torch.func``."""

from . import methods, metrics, ops, targets, viz
from ._cam import cam
from ._checks import GradCamError
from ._compiled import compile_grad_cam
from ._dataset import explain_dataset, load_cams
from ._fusion import fuse_layers
from ._grad_cam import grad_cam
from ._guided import guided_backprop, guided_grad_cam
from ._interpolate import interpolate
from ._layer_choice import LayerChoiceWarning, default_layer
from ._smoothing import augmented_cam, smooth_cam
from ._split import layer_vjp
from ._targets import top_k
from .ops import normalize

__all__ = [
    "grad_cam",
    "compile_grad_cam",
    "layer_vjp",
    "top_k",
    "cam",
    "smooth_cam",
    "augmented_cam",
    "fuse_layers",
    "default_layer",
    "LayerChoiceWarning",
    "guided_backprop",
    "guided_grad_cam",
    "interpolate",
    "normalize",
    "explain_dataset",
    "load_cams",
    "methods",
    "metrics",
    "ops",
    "targets",
    "viz",
    "GradCamError",
]
__version__ = "0.1.0"


def __getattr__(name):
    """``to_jax`` / ``to_torch`` live in gradcam_func.jax, imported on first use only."""
    if name in ("to_jax", "to_torch"):
        from . import jax

        return getattr(jax, name)
    raise AttributeError(f"module 'gradcam_func' has no attribute {name!r}")
