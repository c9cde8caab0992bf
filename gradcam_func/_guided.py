"""Guided backpropagation and Guided Grad-CAM, functionally.

Guided backpropagation lets a ReLU pass a gradient back only where both the gradient
and the ReLU's output are positive. Here that rule is a custom VJP (a
``torch.autograd.Function`` that vmaps), swapped in for the model's ``nn.ReLU`` modules
by forward hooks that live only inside one call: no global state, nothing left behind.
Like Captum, only ``nn.ReLU`` modules are guided, not ``torch.relu`` calls.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._checks import (
    GradCamError,
    as_args_tuple,
    as_tensor_tuple,
    check_flags,
    check_params,
    prepare_model,
)
from ._grad_cam import batch_size_of, check_one_of, grad_cam, over_targets
from ._interpolate import interpolate
from ._split import _eager_no_grad, model_state, output_vjp, run
from ._targets import TopK
from ._types import CamResult, ChunkSize, Inputs, Layer, Model, Params, Target, Targets

__all__ = ["guided_backprop", "guided_grad_cam"]


class _GuidedReLU(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.clamp(min=0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (output,) = ctx.saved_tensors
        return grad.clamp(min=0) * (output > 0)


def _guide(model):
    """Forward hooks making every nn.ReLU of ``model`` guided; returns their handles."""
    if not isinstance(model, nn.Module):
        return []
    return [
        m.register_forward_hook(lambda _, args, out: _GuidedReLU.apply(args[0]))
        for m in model.modules()
        if isinstance(m, nn.ReLU)
    ]


def guided_backprop(
    model: Model,
    inputs: Inputs,
    target: Target = None,
    *,
    targets: Targets = None,
    additional_forward_args: Any = None,
    params: Params | None = None,
    chunk_size: ChunkSize = "auto",
) -> CamResult:
    """Guided-backprop gradients at the inputs: like ``inputs`` (a tuple for a tuple).

    With ``targets`` (K of them, one forward) every result gains a leading K axis.
    """
    call = "guided_backprop"
    check_one_of(target, targets, call)
    is_tuple = isinstance(inputs, tuple)
    inputs = as_tensor_tuple(inputs, call)
    extra = as_args_tuple(additional_forward_args)
    model = prepare_model(model, call)
    check_params(model, params, call)
    state = model_state(model, params)

    def forward(*xs):
        handles = _guide(model)
        try:
            return run(model, state, xs + extra, call)[0], ()
        finally:
            for handle in handles:
                handle.remove()

    with _eager_no_grad():
        output, _, vjp_fn, _ = output_vjp(forward, inputs, call)
        grads, _ = over_targets(
            vjp_fn,
            output,
            batch_size_of(inputs),
            target,
            targets,
            chunk_size,
            call,
            sum(x[0].numel() for x in inputs),
        )
    return grads if is_tuple else grads[0]


def guided_grad_cam(
    model: Model,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    targets: Targets = None,
    additional_forward_args: Any = None,
    params: Params | None = None,
    attribute_to_layer_input: bool = False,
    interpolate_mode: str = "nearest",
    chunk_size: ChunkSize = "auto",
) -> CamResult:
    """Guided backprop times the ReLU'd Grad-CAM upsampled to each input's size.

    Captum's ``GuidedGradCam``: for input (B, C, *S) returns (B, C, *S) (a tuple for a
    tuple of inputs); with ``targets``, (K, B, C, *S). Two forward passes: one for
    Grad-CAM, one through the guided ReLUs.
    """
    check_flags("guided_grad_cam", attribute_to_layer_input=attribute_to_layer_input)
    common = dict(
        additional_forward_args=additional_forward_args, params=params, chunk_size=chunk_size
    )
    if isinstance(targets, TopK):
        raise GradCamError(
            "guided_grad_cam(..., targets=top_k(k)): pass the classes "
            "explicitly, e.g. from grad_cam(..., targets=top_k(k))."
        )
    cams = grad_cam(
        model,
        layer,
        inputs,
        target,
        targets=targets,
        relu=True,
        attribute_to_layer_input=attribute_to_layer_input,
        **common,
    )
    if not isinstance(cams, torch.Tensor):  # a tuple: one map per tensor of the layer
        raise GradCamError(
            "guided_grad_cam(..., layer=...): the layer's output holds several tensors; "
            "Guided Grad-CAM needs one map per example. Pick a layer with one output."
        )
    guided = guided_backprop(model, inputs, target, targets=targets, **common)
    is_tuple = isinstance(guided, tuple)
    results = []
    for x, g in zip(
        as_tensor_tuple(inputs, "guided_grad_cam"), guided if is_tuple else (guided,), strict=True
    ):
        size = tuple(x.shape[2:])
        if targets is None:
            up = interpolate(cams, size, interpolate_mode)
        else:
            flat = interpolate(cams.flatten(0, 1), size, interpolate_mode)
            up = flat.reshape(cams.shape[:3] + size)
        results.append(g * up)
    return tuple(results) if is_tuple else results[0]
