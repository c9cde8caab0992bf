"""Argument validation: the one place that turns bad input into a clear error.

Every message starts with the call as the user wrote it (``grad_cam(..., layer=...)``),
then says what was expected, what was given, and how to fix it.
"""

import torch
from torch import nn

__all__ = ["GradCamError", "resolve_layer", "as_tensor_tuple", "as_args_tuple"]


class GradCamError(ValueError, TypeError):
    """Raised for arguments gradcam_func cannot use; the message says which and why."""


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"a Tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:120]


def resolve_layer(model, layer, call):
    """The module to split the model at: ``layer`` itself, or the submodule it names."""
    if isinstance(layer, nn.Module):
        if isinstance(model, nn.Module) and not any(m is layer for m in model.modules()):
            raise GradCamError(
                f"{call}(..., layer={type(layer).__name__}(...)): this module is not a "
                f"submodule of the model ({type(model).__name__}). Pass a module from "
                "model.modules() or its name from model.named_modules()."
            )
        return layer
    if isinstance(layer, str):
        if not isinstance(model, nn.Module):
            raise GradCamError(
                f"{call}(..., layer={layer!r}): a layer given by name needs an nn.Module "
                f"model, got {type(model).__name__}. Pass the layer module itself."
            )
        modules = dict(model.named_modules())
        if layer in modules and layer != "":
            return modules[layer]
        names = [name for name in modules if name][:6]
        raise GradCamError(
            f"{call}(..., layer={layer!r}): the model has no submodule {layer!r}; names "
            f"that exist include {', '.join(map(repr, names))}. Pass a module or a name "
            "from model.named_modules()."
        )
    raise GradCamError(
        f"{call}(..., layer=...): expected an nn.Module inside the model or its dotted "
        f"name, got {_describe(layer)}."
    )


def as_tensor_tuple(inputs, call, argument="inputs"):
    """``inputs`` as a non-empty tuple of Tensors that share the batch size (dim 0)."""
    items = inputs if isinstance(inputs, tuple) else (inputs,)
    for index, item in enumerate(items):
        where = f"{argument}[{index}]" if isinstance(inputs, tuple) else argument
        if not isinstance(item, torch.Tensor):
            raise GradCamError(
                f"{call}(..., {where}=...): expected a Tensor (or a tuple of Tensors) "
                f"whose dim 0 is the batch, got {_describe(item)}. Convert it with "
                "torch.as_tensor."
            )
        if item.ndim == 0:
            raise GradCamError(
                f"{call}(..., {where}=...): expected a batch with dim 0 as the batch "
                "axis, got a 0-d Tensor. Add a batch axis with x[None]."
            )
    if not items:
        raise GradCamError(f"{call}(..., {argument}=()): expected at least one Tensor.")
    sizes = {item.shape[0] for item in items}
    if len(sizes) > 1:
        shapes = ", ".join(str(tuple(item.shape)) for item in items)
        raise GradCamError(
            f"{call}(..., {argument}=...): every input needs the same batch size in "
            f"dim 0, got shapes {shapes}."
        )
    return items


def as_args_tuple(additional_forward_args):
    """Captum's convention: None -> (), a tuple as is, anything else -> (value,)."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)
