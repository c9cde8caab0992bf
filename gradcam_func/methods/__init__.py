"""Every CAM method, by the name ``cam(method=...)`` takes.

Three families, one module each:

- ``gradient``: maps from the activations and the gradients of the target's score
  (Grad-CAM, Grad-CAM++, XGradCAM, HiResCAM, LayerCAM, element-wise Grad-CAM, and
  EigenGrad-CAM from ``eigen``);
- ``perturbation``: weights from forwards of perturbed copies (Score-CAM, SS-CAM,
  IS-CAM on masked inputs; Ablation-CAM on ablated channels);
- ``eigen``: the first principal component of the activations (Eigen-CAM, no target).

``METHODS[name]`` is a ``Method``: its kind, its pure function, the properties it
has (``gradcam_func.testing.properties`` checks them), and whether its gradients are
a Jacobian that forward mode can take.
"""

from dataclasses import dataclass
from typing import Callable, Optional

from ..ops import grad_cam_from
from .eigen import eigencam_from, eigengradcam_from, first_component
from .gradient import (
    gradcam_elementwise_from,
    gradcam_pp_from,
    gradcam_pp_weights,
    hirescam_from,
    layercam_from,
    xgradcam_from,
    xgradcam_weights,
)
from .perturbation import CONVENTIONS, ablation_weights, masking_weights

__all__ = [
    "METHODS",
    "Method",
    "grad_cam_from",
    "gradcam_pp_from",
    "gradcam_pp_weights",
    "xgradcam_from",
    "xgradcam_weights",
    "hirescam_from",
    "layercam_from",
    "gradcam_elementwise_from",
    "eigencam_from",
    "eigengradcam_from",
    "first_component",
    "masking_weights",
    "ablation_weights",
    "CONVENTIONS",
]

EVERY = (
    "batch_independence",
    "target_stacking",
    "target_linearity",
    "scale_equivariance",
    "channel_permutation",
    "relu_consistency",
    "channel_sum",
    "no_side_effects",
    "differentiable",
)


def _without(*names):
    return tuple(name for name in EVERY if name not in names)


@dataclass(frozen=True)
class Method:
    """kind: "gradient" (``compute(acts, grads, relu=, sum_channels=)``), "eigen"
    (``compute(acts, relu=)``), "masking" or "ablation" (weights from forwards);
    properties: the names of the properties it has."""

    kind: str
    compute: Optional[Callable]
    properties: tuple


GRADIENT_FREE = _without("target_linearity", "scale_equivariance", "differentiable")

METHODS = {
    "gradcam": Method("gradient", grad_cam_from, EVERY),
    "gradcam++": Method(
        "gradient", gradcam_pp_from, _without("target_linearity", "scale_equivariance")
    ),
    "xgradcam": Method("gradient", xgradcam_from, EVERY),
    "hirescam": Method("gradient", hirescam_from, EVERY),
    "layercam": Method("gradient", layercam_from, _without("target_linearity")),
    "gradcam_elementwise": Method(
        "gradient", gradcam_elementwise_from, _without("target_linearity")
    ),
    # An SVD's derivative is undefined where the top singular values meet (a zero map
    # has all of them at 0), so the eigen methods do not promise differentiability.
    "eigengradcam": Method(
        "gradient", eigengradcam_from, _without("target_linearity", "channel_sum", "differentiable")
    ),
    "eigencam": Method(
        "eigen",
        eigencam_from,
        _without("target_linearity", "scale_equivariance", "channel_sum", "differentiable"),
    ),
    "scorecam": Method("masking", None, GRADIENT_FREE),
    # noise makes each example's map depend on its place in the batch and each channel's
    # on its index; with a fixed generator, the rest holds
    "sscam": Method(
        "masking",
        None,
        tuple(
            name
            for name in GRADIENT_FREE
            if name not in ("batch_independence", "channel_permutation")
        ),
    ),
    "iscam": Method("masking", None, GRADIENT_FREE),
    "ablationcam": Method("ablation", None, GRADIENT_FREE),
}
