"""Argument validation: the one place that turns bad input into a clear error.

Every message starts with the call as the user wrote it (``grad_cam(..., layer=...)``),
then says what was expected, what was given, and how to fix it.
"""

import difflib
import re
from collections.abc import Mapping

import torch
from torch import nn

__all__ = [
    "GradCamError",
    "prepare_model",
    "resolve_layer",
    "as_tensor_tuple",
    "as_args_tuple",
    "check_params",
    "check_flags",
    "model_failed",
]

# Wrappers that run another module's forward: the wrapped module is what gets explained.
_WRAPPERS = ("module", "_orig_mod")  # (Distributed)DataParallel, torch.compile


class GradCamError(ValueError, TypeError):
    """Raised for arguments gradcam_func cannot use; the message says which and why."""


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"a Tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:120]


def prepare_model(model, call):
    """The module to run: ``model``, or the one a parallel or compile wrapper holds.

    ``nn.DataParallel`` and ``DistributedDataParallel`` are unwrapped to ``.module``
    (gradcam_func runs the model in this process, on the inputs' device), and a
    ``torch.compile``d module to its original module (hooks and ``torch.func`` need
    the eager module; compile the function that calls gradcam_func instead).
    TorchScript modules are refused: their forward runs outside Python, so no hook or
    ``torch.func`` transform reaches inside.
    """
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            break
    if isinstance(model, torch.jit.ScriptModule):
        raise GradCamError(
            f"{call}(model=RecursiveScriptModule(...)): a torch.jit.script (or trace) "
            "module runs its forward as TorchScript, where forward hooks on submodules and "
            "torch.func transforms cannot reach. Explain the original nn.Module, before "
            "scripting it."
        )
    if not callable(model):
        raise GradCamError(
            f"{call}(model=...): expected an nn.Module or a callable that runs the model, "
            f"got {_describe(model)}."
        )
    return model


def resolve_layer(model, layer, call):
    """The module to split the model at: ``layer`` itself, or the submodule it names."""
    if isinstance(layer, torch.jit.ScriptModule):
        raise GradCamError(
            f"{call}(..., layer={type(layer).__name__}(...)): the layer is a TorchScript "
            "module, which takes no forward hooks. Explain a model built from plain "
            "nn.Modules (before torch.jit.script)."
        )
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
        name = layer
        while name not in modules and name.split(".", 1)[0] in _WRAPPERS:
            name = name.split(".", 1)[1] if "." in name else ""  # a wrapper's prefix
        if name in modules and name != "":
            return modules[name]
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


def check_flags(call, **flags):
    """Refuse anything but True or False for a flag such as ``relu``: None, 0 or "yes"
    would otherwise be read by their truth."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise GradCamError(
                f"{call}(..., {name}=...): expected True or False, got {_describe(value)}. "
                "Pass a bool."
            )


def as_args_tuple(additional_forward_args):
    """Captum's convention: None -> (), a tuple as is, anything else -> (value,)."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def check_params(model, params, call):
    """Raise unless ``params`` maps names of the model's parameters and buffers to
    Tensors of their shapes."""
    if params is None:
        return
    if not isinstance(model, nn.Module):
        raise GradCamError(
            f"{call}(..., params=...): params replace an nn.Module's parameters through "
            f"torch.func.functional_call, but the model is a {type(model).__name__}. "
            "Pass the nn.Module itself, or drop params."
        )
    if not isinstance(params, Mapping):
        raise GradCamError(
            f"{call}(..., params=...): expected a mapping of names to Tensors, like "
            f"dict(model.named_parameters()), got {_describe(params)}."
        )
    known = dict(model.named_parameters(remove_duplicate=False))
    known.update(model.named_buffers(remove_duplicate=False))
    for name, value in params.items():
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=3)
            suggestion = (
                f"did you mean {', '.join(map(repr, close))}?"
                if close
                else f"names look like {', '.join(map(repr, list(known)[:3]))}."
            )
            raise GradCamError(
                f"{call}(..., params={{{name!r}: ...}}): the model has no parameter or "
                f"buffer {name!r}; {suggestion} Use the names of model.named_parameters() "
                "and model.named_buffers()."
            )
        if not isinstance(value, torch.Tensor) or value.shape != known[name].shape:
            raise GradCamError(
                f"{call}(..., params={{{name!r}: ...}}): expected a Tensor of shape "
                f"{tuple(known[name].shape)} (the model's own {name!r}), got "
                f"{_describe(value)}."
            )


_DTYPE_WORDS = re.compile(
    r"dtype|type|scalar|Byte|Long|Int|Char|Bool|Half|Double|Float", re.IGNORECASE
)


def model_failed(call, error, model, args):
    """The GradCamError for an exception raised by the model's own forward pass.

    Names the inputs it ran on, quotes the model's message, and adds the fix for the
    usual causes: integer images, inputs in another dtype than the weights, and a
    missing batch axis.
    """
    shown = ", ".join(
        f"{tuple(a.shape)} {a.dtype}" if isinstance(a, torch.Tensor) else type(a).__name__
        for a in args
    )
    message = str(error).strip().splitlines()[0][:400] if str(error).strip() else ""
    hints = []
    weights = set()
    if isinstance(model, nn.Module):
        weights = {p.dtype for p in model.parameters() if p.is_floating_point()}
    about_dtype = bool(_DTYPE_WORDS.search(message))
    for i, arg in enumerate(args):
        if not isinstance(arg, torch.Tensor):
            continue
        if about_dtype and not arg.is_floating_point() and not arg.is_complex():
            hints.append(
                f"inputs[{i}] holds {arg.dtype} values: a model that computes on them "
                "needs floats, e.g. x.float() / 255 for 8-bit images (integer token ids "
                "fed to an embedding are valid as they are)."
            )
        elif (
            about_dtype
            and arg.is_floating_point()
            and len(weights) == 1
            and arg.dtype not in weights
        ):
            (dtype,) = weights
            hints.append(
                f"inputs[{i}] is {arg.dtype} but the model's weights are {dtype}: pass "
                f"x.to({dtype}), or convert the model with model.to({arg.dtype})."
            )
    convs = (
        [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        if isinstance(model, nn.Module)
        else []
    )
    if (
        convs
        and isinstance(args[0], torch.Tensor)
        and args[0].ndim == len(convs[0].kernel_size) + 1
    ):
        hints.append(
            f"inputs[0] has shape {tuple(args[0].shape)}, which the model's first "
            f"{type(convs[0]).__name__} reads as one example without a batch axis: for one "
            "example, pass x[None]."
        )
    if "saved tensor hooks" in message or "setup_context" in message:
        hints.append(
            "If the model uses activation checkpointing (torch.utils.checkpoint), which "
            "torch.func cannot differentiate through, turn it off for the call: the "
            "gradients are the same without it. gradcam_func turns off HuggingFace's "
            "(gradient_checkpointing_enable) and timm's (set_grad_checkpointing) itself."
        )
    return GradCamError(
        f"{call}(model, ...): the model raised {type(error).__name__} while running on "
        f'inputs ({shown}): "{message}".' + "".join(f" {hint}" for hint in hints)
    )
