"""A drop-in for ``captum.attr.LayerGradCam`` built on the functional core.

Change ``from captum.attr import LayerGradCam`` to
``from gradcam_func.compat import LayerGradCam`` and keep the rest of your code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from ._checks import GradCamError, check_flags
from ._grad_cam import grad_cam
from ._interpolate import interpolate
from ._split import keep_graph
from ._types import Inputs, Target

__all__ = ["LayerGradCam"]

# torch.autograd.grad's keywords, which Captum passes on. gradcam_func takes its
# gradients with torch.func.vjp: unused inputs get zero gradients (materialize_grads),
# nothing is freed (retain_graph), and create_graph=True keeps the result differentiable.
_GRAD_KWARGS = ("create_graph", "retain_graph", "allow_unused", "materialize_grads")


class LayerGradCam:
    """Captum's ``LayerGradCam`` constructor and ``attribute`` call, same results.

    Differences: the result holds no autograd graph in eager use (Captum's keeps the
    forward's graph alive) unless ``grad_kwargs={"create_graph": True}`` asks for one,
    and a ``DataParallel`` model runs its ``.module`` in this process; ``device_ids``
    is accepted for the signature and stored.
    """

    uses_input_marginal_effects = False

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: nn.Module | str,
        device_ids: list[int] | None = None,
    ) -> None:
        self.forward_func = forward_func
        self.layer = layer
        self.device_ids = device_ids

    @property
    def multiplies_by_inputs(self) -> bool:
        """False: Grad-CAM does not multiply by the model's inputs (Captum's flag)."""
        return False

    @classmethod
    def get_name(cls) -> str:
        """``"Layer Grad Cam"``: the class name with a space before each capital."""
        return "".join(c if c.islower() or i == 0 else " " + c for i, c in enumerate(cls.__name__))

    def has_convergence_delta(self) -> bool:
        """False: Grad-CAM has no completeness property to measure a delta against."""
        return False

    def attribute(
        self,
        inputs: Inputs,
        target: Target = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Grad-CAM at ``self.layer``: (B, 1, *S), or (B, C, *S) without summation."""
        check_flags(
            "LayerGradCam.attribute",
            attribute_to_layer_input=attribute_to_layer_input,
            relu_attributions=relu_attributions,
            attr_dim_summation=attr_dim_summation,
        )
        unknown = sorted(set(grad_kwargs or {}) - set(_GRAD_KWARGS))
        if unknown:
            raise GradCamError(
                f"LayerGradCam.attribute(..., grad_kwargs={grad_kwargs!r}): "
                f"{', '.join(map(repr, unknown))} is not a torch.autograd.grad keyword "
                f"gradcam_func can honour; it takes {', '.join(map(repr, _GRAD_KWARGS))}."
            )
        create_graph = (grad_kwargs or {}).get("create_graph")
        with keep_graph() if create_graph else contextlib.nullcontext():
            cams = grad_cam(
                self.forward_func,
                self.layer,
                inputs,
                target,
                additional_forward_args=additional_forward_args,
                attribute_to_layer_input=attribute_to_layer_input,
                relu=relu_attributions,
                sum_channels=attr_dim_summation,
            )
        return cast("torch.Tensor | tuple[torch.Tensor, ...]", cams)

    @staticmethod
    def interpolate(
        layer_attribution: torch.Tensor,
        interpolate_dims: int | tuple[int, ...],
        interpolate_mode: str = "nearest",
    ) -> torch.Tensor:
        """Captum's ``LayerAttribution.interpolate``: resize a CAM to ``interpolate_dims``."""
        return interpolate(layer_attribution, interpolate_dims, interpolate_mode)
