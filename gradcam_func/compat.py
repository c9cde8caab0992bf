"""A drop-in for ``captum.attr.LayerGradCam`` built on the functional core.

Change ``from captum.attr import LayerGradCam`` to
``from gradcam_func.compat import LayerGradCam`` and keep the rest of your code.
"""

from torch import nn

from ._checks import GradCamError
from ._grad_cam import grad_cam
from ._interpolate import interpolate

__all__ = ["LayerGradCam"]


class LayerGradCam:
    """Captum's ``LayerGradCam`` constructor and ``attribute`` call, same results.

    Differences: the result holds no autograd graph in eager use (Captum's keeps the
    forward's graph alive), ``grad_kwargs`` are refused since no ``torch.autograd.grad``
    call exists to receive them, and a ``DataParallel`` model is refused (explain
    ``model.module``): ``device_ids`` is accepted for the signature and stored.
    """

    uses_input_marginal_effects = False

    def __init__(self, forward_func, layer, device_ids=None):
        if isinstance(forward_func, nn.DataParallel):
            raise GradCamError(
                "LayerGradCam(forward_func=DataParallel(...)): gradcam_func runs the model "
                "in one process; pass the wrapped model, forward_func.module, instead."
            )
        self.forward_func = forward_func
        self.layer = layer
        self.device_ids = device_ids

    def has_convergence_delta(self):
        return False

    def attribute(self, inputs, target=None, additional_forward_args=None,
                  attribute_to_layer_input=False, relu_attributions=False,
                  attr_dim_summation=True, grad_kwargs=None):
        """Grad-CAM at ``self.layer``: (B, 1, *S), or (B, C, *S) without summation."""
        if grad_kwargs:
            raise GradCamError(
                f"LayerGradCam.attribute(..., grad_kwargs={grad_kwargs!r}): gradcam_func "
                "takes its gradients with torch.func.vjp, not torch.autograd.grad, so there "
                "is nothing to pass them to. Drop grad_kwargs."
            )
        return grad_cam(
            self.forward_func, self.layer, inputs, target,
            additional_forward_args=additional_forward_args,
            attribute_to_layer_input=attribute_to_layer_input,
            relu=relu_attributions, sum_channels=attr_dim_summation,
        )

    @staticmethod
    def interpolate(layer_attribution, interpolate_dims, interpolate_mode="nearest"):
        """Captum's ``LayerAttribution.interpolate``: resize a CAM to ``interpolate_dims``."""
        return interpolate(layer_attribution, interpolate_dims, interpolate_mode)
