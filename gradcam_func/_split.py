"""The model split at a layer, in ``jax.vjp`` form: ``(output, activation, pullback)``.

One forward pass runs under ``torch.func.vjp`` with respect to a zero perturbation
added to the layer's output (or input). ``pullback`` then maps a cotangent on the
model's output to the gradient at the layer, through the part after the layer only,
and can be called many times or under ``torch.func.vmap``.

The perturbation needs the activation's shape before the forward runs. It is found
once per layer and input signature (shapes, dtypes, non-tensor arguments) by a probe
that stops at the layer: on the meta device when the model allows it, else a real
trunk pass with the RNG state and buffers restored. The result is cached, and checked
against the real activation on every call, so a stale entry is corrected, not used.
"""

import contextlib
import weakref

import torch
from torch import nn
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
from torch._C._functorch import TransformType

from ._checks import GradCamError, as_args_tuple, as_tensor_tuple, resolve_layer

__all__ = ["layer_vjp", "split", "differentiable_context"]

_SPECS = weakref.WeakKeyDictionary()  # layer module -> {signature: spec}


def differentiable_context():
    """True under a ``torch.func`` transform that differentiates (grad, vjp, jvp, ...)."""
    return any(
        interpreter.key() in (TransformType.Grad, TransformType.Jvp)
        for interpreter in retrieve_all_functorch_interpreters()
    )


class _Found(Exception):
    """Raised by the probe hook to stop the forward once the layer is reached."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec


class _StaleSpec(_Found):
    """Raised when the cached spec does not match the activation actually seen."""


def _floating_items(value):
    """Positions and tensors of the floating-point tensors in a layer's value."""
    if isinstance(value, torch.Tensor):
        return [(None, value)] if value.is_floating_point() else []
    if isinstance(value, (tuple, list)):
        return [
            (i, v) for i, v in enumerate(value)
            if isinstance(v, torch.Tensor) and v.is_floating_point()
        ]
    return []


def _spec_of(value):
    return tuple((pos, tuple(t.shape), t.dtype) for pos, t in _floating_items(value))


def _replace(value, new_items):
    """``value`` with the tensors at the given positions replaced."""
    if isinstance(value, torch.Tensor):
        return new_items[None]
    items = [new_items.get(i, v) for i, v in enumerate(value)]
    if hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*items)
    return type(value)(items)


def _register(module, attribute_to_layer_input, on_value):
    """Hook ``on_value(value) -> value`` onto the layer's output (or positional input)."""
    if attribute_to_layer_input:
        return module.register_forward_pre_hook(lambda _, args: on_value(args))
    return module.register_forward_hook(lambda _, args, out: on_value(out))


def _layer_name(model, module):
    if isinstance(model, nn.Module):
        for name, candidate in model.named_modules():
            if candidate is module:
                return repr(name)
    return type(module).__name__


def _run(model, params, args):
    """``model(*args)`` with ``params`` swapped in -> (output, the buffers it ran with).

    Buffers are cloned first, so a forward that updates them in place (BatchNorm's
    running statistics in train mode) writes to tensors of its own: torch.func forbids
    mutating tensors captured from outside a transform, and the module stays untouched.
    """
    if not isinstance(model, nn.Module):
        return model(*args), {}
    params = params or {}
    buffers = {name: params.get(name, buffer).clone()
               for name, buffer in model.named_buffers()}
    return torch.func.functional_call(model, {**params, **buffers}, args), buffers


def _write_back(model, buffers):
    """Copy a forward's updated buffers into the module, as a plain forward would."""
    with torch.no_grad():
        for name, buffer in buffers.items():
            model.get_buffer(name).copy_(buffer)


def _signature(args, attribute_to_layer_input):
    parts = [attribute_to_layer_input]
    for arg in args:
        if isinstance(arg, torch.Tensor):
            parts.append((tuple(arg.shape), arg.dtype, arg.device))
        else:
            try:
                hash(arg)
                parts.append((type(arg), arg))
            except TypeError:
                parts.append((type(arg), repr(arg)))
    return tuple(parts)


def _probe(model, module, args, params, attribute_to_layer_input):
    """The activation's spec, from a forward that stops at the layer."""

    def stop(value):
        raise _Found(_spec_of(value))

    handle = _register(module, attribute_to_layer_input, stop)
    try:
        accelerators = {a.device for a in args
                        if isinstance(a, torch.Tensor) and a.device.type == "cuda"}
        with torch.random.fork_rng(devices=list(accelerators)), torch.no_grad():
            if isinstance(model, nn.Module):
                state = dict(model.named_parameters())
                state.update(model.named_buffers())
                state.update(params or {})
                meta_state = {k: torch.empty(v.shape, dtype=v.dtype, device="meta")
                              for k, v in state.items()}
                meta_args = tuple(
                    torch.empty(a.shape, dtype=a.dtype, device="meta")
                    if isinstance(a, torch.Tensor) else a for a in args
                )
                try:
                    torch.func.functional_call(model, meta_state, meta_args)
                except _Found as found:
                    return found.spec
                except Exception:
                    pass  # the model does not run on meta tensors; probe for real
            _run(model, params, args)
    except _Found as found:
        return found.spec
    finally:
        handle.remove()
    return None


def split(model, layer, inputs, *, additional_forward_args=None, params=None,
          attribute_to_layer_input=False, call="layer_vjp"):
    """``layer_vjp`` with the activation and the pullback's result always tuples."""
    module = resolve_layer(model, layer, call)
    inputs = as_tensor_tuple(inputs, call)
    args = inputs + as_args_tuple(additional_forward_args)
    if params is not None and not isinstance(model, nn.Module):
        raise GradCamError(
            f"{call}(..., params=...): params replace an nn.Module's parameters through "
            f"torch.func.functional_call, but the model is a {type(model).__name__}. "
            "Pass the nn.Module itself, or drop params."
        )
    where = "input" if attribute_to_layer_input else "output"
    specs = _SPECS.setdefault(module, {})
    signature = _signature(args, attribute_to_layer_input)
    spec = specs.get(signature)
    if spec is None:
        spec = _probe(model, module, args, params, attribute_to_layer_input)
    for _ in range(2):
        if spec is None:
            break
        if not spec:
            raise GradCamError(
                f"{call}(..., layer={_layer_name(model, module)}): the layer's {where} "
                "holds no floating-point Tensor, so there is nothing to attribute to."
            )
        specs[signature] = spec
        try:
            return _split_with(model, module, args, params, attribute_to_layer_input,
                               spec, call)
        except _StaleSpec as stale:
            spec = stale.spec
    raise GradCamError(
        f"{call}(..., layer={_layer_name(model, module)}): the layer was not called "
        "during the model's forward pass, so it has no activation to explain. Pick a "
        "module that the forward actually uses (see model.named_modules())."
    )


def _split_with(model, module, args, params, attribute_to_layer_input, spec, call):
    def forward(*perturbations):
        seen = []

        def perturb(value):
            if seen:
                raise GradCamError(
                    f"{call}(..., layer={_layer_name(model, module)}): the layer is "
                    "called more than once in one forward pass (shared weights), so its "
                    "activation is ambiguous. Wrap each use in its own module, or pick a "
                    "layer that runs once."
                )
            if _spec_of(value) != spec:
                raise _StaleSpec(_spec_of(value))
            items = _floating_items(value)
            seen.append(tuple(t for _, t in items))
            return _replace(value, {pos: t + eps
                                    for (pos, t), eps in zip(items, perturbations)})

        handle = _register(module, attribute_to_layer_input, perturb)
        try:
            output, buffers = _run(model, params, args)
        finally:
            handle.remove()
        if not seen:
            raise _StaleSpec(None)
        if not isinstance(output, torch.Tensor):
            raise GradCamError(
                f"{call}(model, ...): the model must return a Tensor of scores, got "
                f"{type(output).__name__}. Wrap it to return the Tensor to explain."
            )
        return output, (seen[0], buffers)

    zeros = tuple(torch.zeros(shape, dtype=dtype, device=args[0].device)
                  for _, shape, dtype in spec)
    output, vjp_fn, (acts, buffers) = torch.func.vjp(forward, *zeros, has_aux=True)
    if params is None and not retrieve_all_functorch_interpreters():
        _write_back(model, buffers)
    return output, acts, vjp_fn


def layer_vjp(model, layer, inputs, *, additional_forward_args=None, params=None,
              attribute_to_layer_input=False):
    """The model split at ``layer``: ``(output, activation, pullback)``.

    model: an nn.Module or a callable that calls ``layer``; inputs: a Tensor or a tuple
    of Tensors, dim 0 the batch, passed as ``model(*inputs, *additional_forward_args)``.
    Returns the model's output (B, ...), the layer's output (or input, with
    ``attribute_to_layer_input=True``) as a Tensor, or a tuple when it holds several
    Tensors, and ``pullback(cotangent) -> gradient at the activation`` (same structure
    as the activation) for a cotangent shaped like the output. ``pullback`` does not
    rerun the forward; map it over stacked cotangents with ``torch.func.vmap``.

    Outside ``torch.func`` differentiating transforms nothing keeps an autograd graph:
    output, activation and gradients are plain tensors. Inside them, everything stays
    differentiable with respect to ``params`` and ``inputs``.
    """
    with _eager_no_grad():
        output, acts, vjp_fn = split(
            model, layer, inputs, additional_forward_args=additional_forward_args,
            params=params, attribute_to_layer_input=attribute_to_layer_input,
        )

    def pullback(cotangent):
        with _eager_no_grad():
            grads = vjp_fn(cotangent)
        return grads[0] if len(grads) == 1 else grads

    return output, (acts[0] if len(acts) == 1 else acts), pullback


def _eager_no_grad():
    """No autograd recording, unless a torch.func transform differentiates through us."""
    return contextlib.nullcontext() if differentiable_context() else torch.no_grad()
