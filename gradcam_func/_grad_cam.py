"""grad_cam: one forward pass, a vmap of the pullback over cotangents, then the ops."""

import functools

import torch

from . import ops
from ._checks import GradCamError
from ._split import _eager_no_grad, split
from ._targets import TopK, cotangent, cotangents

__all__ = ["grad_cam", "explain", "over_targets", "check_one_of", "batch_size_of"]


def grad_cam(model, layer, inputs, target=None, *, targets=None,
             additional_forward_args=None, params=None, attribute_to_layer_input=False,
             relu=False, sum_channels=True, chunk_size=None):
    """Grad-CAM of ``model`` at ``layer``: Captum's ``LayerGradCam`` as a pure function.

    inputs: a Tensor or tuple of Tensors, dim 0 the batch B. target: any Captum target
    (None, int, tuple, Tensor, list) or a callable ``output -> (B,) score``, which
    receives the output as the model returns it (``out.logits`` for HuggingFace). For a
    layer activation (B, C, *S) returns (B, 1, *S) (or (B, C, *S) with
    ``sum_channels=False``), a tuple of those when the layer holds several Tensors.

    targets: a sequence of K targets instead of ``target``; returns the results stacked
    on a new axis 0, (K, B, 1, *S), from ONE forward pass. With ``targets=top_k(k)``
    returns ``(cams, classes)``, classes (k, B). chunk_size: targets per vmap chunk.
    params: a mapping of parameter/buffer tensors used instead of the module's own.
    attribute_to_layer_input: the CAM of the tensor the layer receives, with its
    gradient through every use of that tensor (Captum's semantics).
    """
    return explain(
        functools.partial(ops.grad_cam_from, relu=relu, sum_channels=sum_channels),
        model, layer, inputs, target, targets=targets,
        additional_forward_args=additional_forward_args, params=params,
        attribute_to_layer_input=attribute_to_layer_input, chunk_size=chunk_size,
        call="grad_cam",
    )


def explain(cam_from, model, layer, inputs, target=None, *, targets=None,
            additional_forward_args=None, params=None, attribute_to_layer_input=False,
            chunk_size=None, call="grad_cam"):
    """``grad_cam``'s pipeline with ``cam_from(acts, grads) -> cam`` as the last step.

    One forward pass; for ``targets``, ``cam_from`` runs inside the vmap over the K
    cotangents, so a chunk's (chunk, B, C, *S) gradients are freed before the next.
    A list of layers gives a list of results, from the same forward and pullbacks.
    """
    check_one_of(target, targets, call)
    with _eager_no_grad():
        output, _, acts, pullback, finish = split(
            model, layer, inputs, additional_forward_args=additional_forward_args,
            params=params, attribute_to_layer_input=attribute_to_layer_input, call=call,
        )

        def cams_of(cots):
            return tuple(tuple(cam_from(a, g) for a, g in zip(layer_acts, layer_grads))
                         for layer_acts, layer_grads in zip(acts, pullback(cots)))

        cams, classes = over_targets(cams_of, output, batch_size_of(inputs), target,
                                     targets, chunk_size, call)
    finish()
    cams = [c[0] if len(c) == 1 else c for c in cams]
    cams = cams if isinstance(layer, list) else cams[0]
    return cams if classes is None else (cams, classes)


def batch_size_of(inputs):
    """B: dim 0 of the (first) input, already checked to be a batched Tensor."""
    return (inputs[0] if isinstance(inputs, tuple) else inputs).shape[0]


def check_one_of(target, targets, call):
    if target is not None and targets is not None:
        raise GradCamError(
            f"{call}(..., target=..., targets=...): pass one of them: target for a "
            "single explanation, targets for a stack of K explanations."
        )


def over_targets(fn, output, batch, target, targets, chunk_size, call):
    """``fn(cotangents)`` for ``target``, or vmapped over the K targets' cotangents.

    Returns (result, classes): classes (k, B) for ``targets=top_k(k)``, else None.
    """
    if targets is None:
        return fn(cotangent(output, target, batch, call)), None
    classes = None
    if isinstance(targets, TopK):
        targets, classes = targets.targets(output, call)
    return torch.func.vmap(fn, chunk_size=chunk_size)(
        cotangents(output, targets, batch, call)), classes
