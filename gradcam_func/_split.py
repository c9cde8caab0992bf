"""The model split at a layer, in ``jax.vjp`` form: ``(output, activation, pullback)``.

One forward pass runs under ``torch.func.vjp`` with respect to zero perturbations added
to the tensors at the layer. ``pullback`` then maps a cotangent on the model's output
to the gradient at the layer without running the forward again, and can be called many
times or under ``torch.func.vmap``.

Where a perturbation goes (a *source*, see ``_producers``):

- a tensor the layer returns: added by a forward hook as the layer returns it
  (``("hook", i)``), so every later use sees it;
- a tensor the layer receives (``attribute_to_layer_input=True``), or one it returns
  unchanged: added where the tensor is made (a model argument, a parameter, or the
  torch call that made it), so every use counts, before the layer and beside it, as in
  Captum's autograd.

The perturbations need the tensors' shapes and sources before the forward runs. They
are found once per layer and input signature (shapes, dtypes, non-tensor arguments) by
a probe that stops at the layer: on the meta device when the model allows it, else a
real trunk pass with the RNG state forked and buffers cloned. The result is cached and
checked on every call (shapes, and that the layer received the perturbed tensors), so a
stale entry is corrected by a new probe, never used.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from ._checks import (
    GradCamError,
    as_args_tuple,
    as_tensor_tuple,
    check_flags,
    check_params,
    model_failed,
    prepare_model,
    resolve_layer,
)
from ._outputs import entries_like, flatten, unflatten
from ._producers import Ops, source_of
from ._types import Inputs, Layer, Model, Params

__all__ = [
    "layer_vjp",
    "split",
    "forward_with",
    "differentiable_context",
    "run",
    "model_state",
    "output_vjp",
    "keep_graph",
]

_SPECS: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = weakref.WeakKeyDictionary()
# layer module -> {signature: spec}
_KEEP_GRAPH = contextvars.ContextVar("keep_graph", default=False)


def differentiable_context():
    """True under a ``torch.func`` transform that differentiates (grad, vjp, jvp, ...)."""
    return any(
        interpreter.key() in (TransformType.Grad, TransformType.Jvp)
        for interpreter in retrieve_all_functorch_interpreters()
    )


def _eager_no_grad():
    """No autograd recording, unless a torch.func transform differentiates through us
    or ``keep_graph`` asked for an eager result that autograd can differentiate."""
    if differentiable_context() or _KEEP_GRAPH.get():
        return contextlib.nullcontext()
    return torch.no_grad()


@contextlib.contextmanager
def keep_graph():
    """Inside, results keep the autograd graph (``torch.autograd.grad(cam, x)`` works),
    as Captum's ``create_graph=True`` gives; outside, eager results hold no graph."""
    token = _KEEP_GRAPH.set(True)
    try:
        yield
    finally:
        _KEEP_GRAPH.reset(token)


class _Found(Exception):
    """Raised by the probe's hook to stop the forward once the layer is reached."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec


class _Stale(Exception):
    """Raised when the cached spec does not describe what the layer actually saw."""


def model_state(model, params):
    """``{name: tensor}`` a forward runs with: ``params`` over the module's own
    parameters and buffers.

    The module's own parameters go in detached (unless ``keep_graph`` asked for a
    graph): nothing differentiates with respect to them, and kernels pick their fast
    paths for tensors that do not require grad (``nn.MultiheadAttention``'s fused
    projection among them).
    """
    if not isinstance(model, nn.Module):
        return {}
    params = params or {}
    keep = _KEEP_GRAPH.get()
    state = {
        name: params[name] if name in params else (p if keep else p.detach())
        for name, p in model.named_parameters()
    }
    state.update({name: params.get(name, b) for name, b in model.named_buffers()})
    return state


def run(model, state, args, call, ops=None):
    """``model(*args)`` with ``state`` swapped in -> ``(output, buffers it ran with)``.

    Buffers are cloned first, inside any transform, so a forward that updates them in
    place (BatchNorm's running statistics in train mode) writes to tensors of its own:
    torch.func forbids mutating tensors captured from outside a transform, and the
    module stays untouched. Runs inside the ``ops`` mode if given. An exception raised
    by the model becomes a GradCamError that names the inputs and suggests the fix;
    gradcam_func's own exceptions pass through.
    """
    try:
        with (
            ops if ops is not None else contextlib.nullcontext(),
            _checkpointing_off(model),
            _attention_for_transforms(),
        ):
            if not isinstance(model, nn.Module):
                return model(*args), {}
            buffers = {name: state[name].clone() for name, _ in model.named_buffers()}
            return torch.func.functional_call(model, {**state, **buffers}, args), buffers
    except Exception as error:
        if not _raised_by_torch_or_python(error):
            raise  # gradcam_func's own signals, and the user's own exception types
        raise model_failed(call, error, model, args) from error


def _attention_for_transforms():
    """The math kernel for scaled dot-product attention when a torch.func transform
    differentiates through the call: the CPU flash kernel's backward has no derivative
    of its own, so a CAM through attention could not be differentiated."""
    if not differentiable_context():
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def _raised_by_torch_or_python(error):
    """Whether ``error`` is a builtin or torch exception (a RuntimeError from an op),
    not one of gradcam_func's or a class the user's own code defines."""
    module = type(error).__module__
    return module == "builtins" or module.split(".")[0] == "torch"


def _write_back(model, buffers):
    """Copy a forward's updated buffers into the module, as a plain forward would."""
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])


@contextlib.contextmanager
def _checkpointing_off(model):
    """Activation checkpointing off for one forward, then back as it was.

    torch.func cannot differentiate through ``torch.utils.checkpoint`` (its saved-tensor
    hooks and its autograd.Function lack functorch support); the gradients are the same
    without it. HuggingFace models keep the switch in ``module.gradient_checkpointing``,
    timm models in ``module.grad_checkpointing``.
    """
    switched = []
    if isinstance(model, nn.Module):
        for module in model.modules():
            for flag in ("gradient_checkpointing", "grad_checkpointing"):
                if getattr(module, flag, None) is True:
                    setattr(module, flag, False)
                    switched.append((module, flag))
    try:
        yield
    finally:
        for module, flag in switched:
            setattr(module, flag, True)


def _register(module, attribute_to_layer_input, on_value):
    """Hook ``on_value(value, received)`` onto the layer's output (or input).

    value: the layer's output, or ``(args, kwargs)`` it was called with; received: the
    ``(args, kwargs)``. A value returned by ``on_value`` replaces the layer's output.
    """
    if attribute_to_layer_input:

        def pre_hook(_, args, kwargs):
            on_value((args, kwargs), (args, kwargs))

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    return module.register_forward_hook(
        lambda _, args, kwargs, out: on_value(out, (args, kwargs)), with_kwargs=True
    )


def _layer_name(model, module):
    if isinstance(model, nn.Module):
        for name, candidate in model.named_modules():
            if candidate is module:
                return repr(name)
    return type(module).__name__


def _not_called(call, model, module):
    return GradCamError(
        f"{call}(..., layer={_layer_name(model, module)}): the layer was not called during "
        "the model's forward pass, so it has no activation to explain. Pick a module that "
        "the forward actually uses (see model.named_modules())."
    )


def _called_twice(call, model, module):
    return GradCamError(
        f"{call}(..., layer={_layer_name(model, module)}): the layer is called more than "
        "once in one forward pass (shared weights), so its activation is ambiguous. Wrap "
        "each use in its own module, or pick a layer that runs once."
    )


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


def _describe(value, received, attribute_to_layer_input, ops, args, state):
    """The spec of what the layer saw: ``((shape, dtype, source), ...)`` per tensor.

    A returned tensor that the layer also received (an identity, dropout in eval mode)
    is the same tensor as an input: it is perturbed where it was made, like an input.
    """
    tensors = flatten(value)[0]
    inputs = flatten(received)[0]
    spec = []
    for i, tensor in enumerate(tensors):
        source = ("hook", i)
        if attribute_to_layer_input or any(tensor is x for x in inputs):
            source = source_of(tensor, ops, args, state)
        spec.append((tuple(tensor.shape), tensor.dtype, source))
    return tuple(spec)


def _probe(model, module, args, state, attribute_to_layer_input, call):
    """The spec of the layer's tensors, from a forward that stops at the layer."""
    ops = Ops()

    def stop(value, received):
        with ops.paused():
            raise _Found(_describe(value, received, attribute_to_layer_input, ops, args, state))

    handle = _register(module, attribute_to_layer_input, stop)
    try:
        accelerators = {
            a.device for a in args if isinstance(a, torch.Tensor) and a.device.type == "cuda"
        }
        with torch.random.fork_rng(devices=list(accelerators)), torch.no_grad():
            run(model, state, args, call, ops)
    except _Found as found:
        return found.spec
    finally:
        handle.remove()
    return None


def _on_meta(values):
    """Empty meta tensors in place of the Tensors of a tuple or dict."""

    def meta(v):
        if isinstance(v, torch.Tensor):
            return torch.empty(v.shape, dtype=v.dtype, device="meta")
        return v

    if isinstance(values, dict):
        return {k: meta(v) for k, v in values.items()}
    return tuple(meta(v) for v in values)


def _find_spec(model, module, args, state, attribute_to_layer_input, call, meta):
    """The probe, on the meta device first when ``meta`` (no compute, no memory)."""
    if meta and isinstance(model, nn.Module):
        meta_args = _on_meta(args)
        try:
            return _probe(model, module, meta_args, _on_meta(state), attribute_to_layer_input, call)
        except Exception:  # noqa: BLE001, S110
            # Ops without meta kernels, data-dependent control flow, device checks:
            # the real probe below runs the trunk and raises the model's real error.
            pass
    return _probe(model, module, args, state, attribute_to_layer_input, call)


def layer_spec(model, module, args, state, attribute_to_layer_input, call, *, fresh=False):
    """What ``module`` sees when ``model(*args)`` runs: ``((shape, dtype, source), ...)``
    per tensor, or None if it is not called. From the cache for this input signature,
    else from a probe (on the meta device first); ``fresh``: a real probe, cached anew."""
    cache = _SPECS.setdefault(module, {})
    signature = _signature(args, attribute_to_layer_input)
    spec = None if fresh else cache.get(signature)
    if spec is None:
        spec = _find_spec(
            model, module, args, state, attribute_to_layer_input, call, meta=not fresh
        )
        _check_spec(spec, model, module, attribute_to_layer_input, call)
        cache[signature] = spec
    return spec


def split(
    model,
    layer,
    inputs,
    *,
    additional_forward_args,
    params,
    attribute_to_layer_input,
    call,
):
    """The split with everything flat: a ``Split`` (output, tensors, acts, pullback,
    finish, jvp).

    layer: one layer, or a list of layers (one forward and one pullback for all).
    output: the model's output as returned; tensors: its floating-point Tensors, the
    order ``pullback`` takes cotangents in; acts: per layer, a tuple of its tensors;
    ``pullback(cotangents) -> grads``, per layer a tuple, one per act. ``finish()``
    writes the forward's buffer updates (train-mode BatchNorm) into the module: call it
    once the whole call has succeeded, so a call that fails leaves the module as it was.
    ``jvp(tangents, scaled)`` (per layer, one per act) -> the output tensors' tangents.
    """
    check_flags(call, attribute_to_layer_input=attribute_to_layer_input)
    model = prepare_model(model, call)
    inputs = as_tensor_tuple(inputs, call)
    args = inputs + as_args_tuple(additional_forward_args)
    from ._layer_choice import choose_layer  # it imports this module

    layer = choose_layer(model, layer, args, call)
    layers = layer if isinstance(layer, list) else [layer]
    if not layers:
        raise GradCamError(f"{call}(..., layer=[]): expected at least one layer.")
    modules = [resolve_layer(model, one, call) for one in layers]
    if len({id(m) for m in modules}) != len(modules):
        raise GradCamError(
            f"{call}(..., layer=[...]): a layer is listed twice; list each layer once."
        )
    check_params(model, params, call)
    state = model_state(model, params)
    specs = [
        layer_spec(model, module, args, state, attribute_to_layer_input, call) for module in modules
    ]
    for _ in range(2):
        for module, spec in zip(modules, specs, strict=True):
            _check_spec(spec, model, module, attribute_to_layer_input, call)
            _SPECS[module][_signature(args, attribute_to_layer_input)] = spec
        try:
            return _split_with(
                model,
                modules,
                args,
                state,
                attribute_to_layer_input,
                specs,
                call,
                write_back=params is None and isinstance(model, nn.Module),
            )
        except _Stale:
            specs = [
                _find_spec(model, module, args, state, attribute_to_layer_input, call, meta=False)
                for module in modules
            ]
    raise GradCamError(
        f"{call}(..., layer={_layer_name(model, modules[0])}): the forward pass runs "
        "differently each time (the layer's tensors change shape or come from other "
        "calls between two runs on the same inputs), so there is no single activation "
        "to explain. Make the forward deterministic for the call (model.eval()), or "
        "explain another layer."
    )


def _check_spec(spec, model, module, attribute_to_layer_input, call):
    """Raise for a layer that was not called or holds nothing to differentiate."""
    where = "input" if attribute_to_layer_input else "output"
    if spec is None:
        raise _not_called(call, model, module)
    if not spec:
        raise GradCamError(
            f"{call}(..., layer={_layer_name(model, module)}): the layer's {where} holds "
            "no floating-point Tensor, so there is nothing to attribute to. Pick a layer "
            f"whose {where} is a float Tensor (or a tuple holding some)."
        )
    if any(source is None for _, _, source in spec):
        raise GradCamError(
            f"{call}(..., layer={_layer_name(model, module)}, "
            f"attribute_to_layer_input={attribute_to_layer_input}): a tensor the layer "
            "receives was not made by a torch call, a model input or a parameter that "
            "gradcam_func can see (a custom C++ op?), so its gradient through every use "
            "cannot be taken. Explain the output of the layer that makes it instead."
        )


def _tagged(spec, index):
    """The spec with its hook sources tagged by the layer's index among the layers."""
    return tuple(
        (shape, dtype, ("hook", index, source[1]) if source[0] == "hook" else source)
        for shape, dtype, source in spec
    )


def _split_with(model, modules, args, state, attribute_to_layer_input, specs, call, write_back):
    specs = [_tagged(spec, i) for i, spec in enumerate(specs)]
    every = [entry for spec in specs for entry in spec]
    sources = list(dict.fromkeys(source for _, _, source in every))
    any_hook = [any(source[0] == "hook" for _, _, source in spec) for spec in specs]

    def forward_on(state, *perturbations, scaled=False):
        """The model on ``state``, perturbed at the layers' sources -> (output, aux).

        A source's value v becomes ``v + e`` (``v * (1 + e)`` when ``scaled``); ``e``
        may be any shape that broadcasts to v's."""

        def change(e):
            return (lambda v: v * (1 + e)) if scaled else (lambda v: v + e)

        eps = {source: change(e) for source, e in zip(sources, perturbations, strict=True)}
        ops = None
        if any(source[0] == "op" for source in sources):
            ops = Ops({(s[1], s[2]): e for s, e in eps.items() if s[0] == "op"})
        run_args = tuple(
            eps[("input", i)](arg) if ("input", i) in eps else arg for i, arg in enumerate(args)
        )
        run_state = dict(state)
        for source, e in eps.items():
            if source[0] == "state":
                run_state[source[1]] = e(state[source[1]])
        at_source = {s: run_args[s[1]] for s in sources if s[0] == "input"}
        at_source.update({s: run_state[s[1]] for s in sources if s[0] == "state"})
        seen = [[] for _ in modules]

        def hook_for(index):
            def at_layer(value, received):
                with ops.paused() if ops is not None else contextlib.nullcontext():
                    if seen[index]:
                        raise _called_twice(call, model, modules[index])
                    tensors, others, tree = flatten(value)
                    _check_seen(tensors, flatten(received)[0], specs[index], at_source, ops)
                    seen[index].append(tensors)
                    if not any_hook[index]:
                        return None
                    return unflatten(
                        tree,
                        tuple(
                            eps[("hook", index, i)](t) if ("hook", index, i) in eps else t
                            for i, t in enumerate(tensors)
                        ),
                        others,
                    )

            return at_layer

        handles = [
            _register(module, attribute_to_layer_input, hook_for(i))
            for i, module in enumerate(modules)
        ]
        try:
            output, buffers = run(model, run_state, run_args, call, ops)
        finally:
            for handle in handles:
                handle.remove()
        if not all(seen):
            raise _Stale()
        return output, (tuple(tuple(s[0]) for s in seen), buffers)

    forward = functools.partial(forward_on, state)
    device = _device(args, state)
    zeros = [
        torch.zeros(
            next(shape for shape, _, s in every if s == source),
            dtype=next(dtype for _, dtype, s in every if s == source),
            device=device,
        )
        for source in sources
    ]
    output, tensors, vjp_fn, (acts, buffers) = output_vjp(forward, zeros, call)

    def pullback(cotangents):
        """Cotangents on the output's floating-point Tensors -> per layer, a gradient
        per act."""
        grads = dict(zip(sources, vjp_fn(tuple(cotangents)), strict=True))
        return tuple(tuple(grads[source] for _, _, source in spec) for spec in specs)

    # Forward mode runs the model again for each (vmapped) batch of tangents; a
    # train-mode BatchNorm updates its running statistics on clones there (``run``), which
    # are dropped: the pass above made the one update that ``finish`` writes back.
    def jvp(tangents, scaled):
        """Tangents per layer, one per act -> the tangents of the output's floating-point
        Tensors (a tuple): the directional derivative through every use of each act.

        A tangent may be any shape that broadcasts to its act's (a per-channel offset
        (1, C, 1, 1) is never expanded before the layer); ``scaled``: each act's direction
        is the act times its tangent (a scaling of the act, not an offset)."""
        by_source = {}
        for spec, layer_tangents in zip(specs, tangents, strict=True):
            for (_, _, source), tangent in zip(spec, layer_tangents, strict=True):
                by_source.setdefault(source, tangent)
        directions = tuple(by_source[source] for source in sources)
        return torch.func.jvp(
            lambda *e: flatten(forward_on(state, *e, scaled=scaled)[0])[0],
            tuple(torch.zeros(d.shape, dtype=d.dtype, device=d.device) for d in directions),
            directions,
        )[1]

    def finish():
        """Write the forward's buffer updates into the module, once the call succeeded."""
        if write_back and not retrieve_all_functorch_interpreters():
            _write_back(model, buffers)

    return Split(output, tensors, acts, pullback, finish, jvp)


class Split(tuple):
    """What ``split`` returns: ``(output, tensors, acts, pullback, finish, jvp)``."""

    def __new__(cls, output, tensors, acts, pullback, finish, jvp):
        return super().__new__(cls, (output, tensors, acts, pullback, finish, jvp))

    output = property(lambda self: self[0])
    tensors = property(lambda self: self[1])
    acts = property(lambda self: self[2])
    pullback = property(lambda self: self[3])
    finish = property(lambda self: self[4])
    jvp = property(lambda self: self[5])


def output_vjp(forward, primals, call):
    """``torch.func.vjp`` of ``forward(*primals) -> (output, aux)`` for any output.

    Returns ``(output, tensors, vjp_fn, aux)``: the output as the model returned it,
    its floating-point Tensors, and ``vjp_fn(cotangents)`` taking one cotangent per
    Tensor, as a tuple.
    """
    structure = []  # the tree and the non-Tensor leaves (aux may hold only Tensors)

    def flat(*values):
        output, aux = forward(*values)
        tensors, others, tree = flatten(output)
        if not tensors:
            raise GradCamError(
                f"{call}(model, ...): the model's output ({type(output).__name__}) holds "
                "no floating-point Tensor, so there is no score to differentiate."
            )
        structure[:] = [tree, others]
        return tensors, (aux, [o for o in others if isinstance(o, torch.Tensor)])

    tensors, vjp_fn, (aux, other_tensors) = torch.func.vjp(flat, *primals, has_aux=True)
    tree, others = structure
    unwrapped = iter(other_tensors)  # the same Tensors, outside the transform
    others = [next(unwrapped) if isinstance(o, torch.Tensor) else o for o in others]
    return unflatten(tree, tensors, others), tensors, vjp_fn, aux


def _check_seen(tensors, received, spec, at_source, ops):
    """Raise _Stale unless the layer saw what ``spec`` says, perturbed where it says."""
    if [(tuple(t.shape), t.dtype) for t in tensors] != [(s, d) for s, d, _ in spec]:
        raise _Stale()
    for tensor, (_, _, source) in zip(tensors, spec, strict=True):
        if source[0] == "hook":
            if any(tensor is x for x in received):  # returned unchanged: perturb at source
                raise _Stale()
        elif source[0] == "op":
            if ops.perturbed.get(source[1:]) is not tensor:
                raise _Stale()
        elif at_source[source] is not tensor:
            raise _Stale()


def _device(args, state):
    """Where the perturbations live: the device of the first floating input or weight."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)] + list(state.values())
    floating = [t for t in tensors if t.is_floating_point()]
    return (floating or tensors)[0].device


def forward_with(model, layer, inputs, *, additional_forward_args, params, call, replace=None):
    """One forward that sees the layer's output: ``(output, tensors)``.

    tensors: the floating-point Tensors of the layer's output, as a tuple. With
    ``replace`` (a tuple of Tensors shaped like them) the layer's output is replaced, so
    the model computes the rest from it; under ``vmap`` over ``replace`` the part before
    the layer, which does not depend on it, runs once. Buffers are cloned: the module
    is left as it was, also in train mode.
    """
    model = prepare_model(model, call)
    args = as_tensor_tuple(inputs, call) + as_args_tuple(additional_forward_args)
    module = resolve_layer(model, layer, call)  # (cam() has chosen the default layer)
    check_params(model, params, call)
    seen = []

    def at_layer(value, received):
        if seen:
            raise _called_twice(call, model, module)
        tensors, others, tree = flatten(value)
        seen.append(tensors)
        return None if replace is None else unflatten(tree, tuple(replace), others)

    handle = _register(module, False, at_layer)
    try:
        output, _ = run(model, model_state(model, params), args, call)
    finally:
        handle.remove()
    if not seen:
        raise _not_called(call, model, module)
    return output, seen[0]


def layer_vjp(
    model: Model,
    layer: Layer,
    inputs: Inputs,
    *,
    additional_forward_args: Any = None,
    params: Params | None = None,
    attribute_to_layer_input: bool = False,
) -> tuple[Any, Any, Callable[[Any], Any]]:
    """The model split at ``layer``: ``(output, activation, pullback)``.

    model: an nn.Module or a callable that calls ``layer``; inputs: a Tensor or a tuple
    of Tensors, dim 0 the batch, passed as ``model(*inputs, *additional_forward_args)``.
    Returns the model's output exactly as the model returned it (a Tensor, tuple, dict,
    dataclass or ``ModelOutput``), the layer's output (or input, with
    ``attribute_to_layer_input=True``) as a Tensor, or a tuple when it holds several
    Tensors, and ``pullback(cotangent) -> gradient at the activation`` (same structure
    as the activation). A list of layers gives a list of activations, and a pullback
    that returns a list of gradients, from one forward and one backward pass. The cotangent is shaped like the output: a Tensor for a Tensor
    output; for a structured output, the same structure with a Tensor (or None, for
    zeros) at each floating-point Tensor of the output. ``pullback`` does not rerun
    the forward; map it over stacked cotangents with ``torch.func.vmap``.

    With ``attribute_to_layer_input=True`` the gradient is taken with respect to the
    tensor the layer receives, through every use of that tensor (Captum's semantics).

    Outside ``torch.func`` differentiating transforms nothing keeps an autograd graph:
    output, activation and gradients are plain tensors. Inside them, everything stays
    differentiable with respect to ``params`` and ``inputs``.
    """
    call = "layer_vjp"
    with _eager_no_grad():
        output, tensors, acts, vjp_fn, finish, _ = split(
            model,
            layer,
            inputs,
            additional_forward_args=additional_forward_args,
            params=params,
            attribute_to_layer_input=attribute_to_layer_input,
            call=call,
        )
    finish()

    def one(values):  # a layer's tensors: the Tensor, or a tuple of several
        return values[0] if len(values) == 1 else values

    def per_layer(values):  # one layer as it was asked for, a list for a list
        return [one(v) for v in values] if isinstance(layer, list) else one(values[0])

    def pullback(cotangent):
        cotangents = _cotangent_tensors(cotangent, output, tensors, call)
        with _eager_no_grad():
            return per_layer(vjp_fn(cotangents))

    return output, per_layer(acts), pullback


def _cotangent_tensors(cotangent, output, tensors, call):
    """A cotangent shaped like ``output`` -> one Tensor per floating Tensor of it."""
    given = entries_like(cotangent, output)
    if given is None:
        raise GradCamError(
            f"{call}(...) pullback(cotangent): the model returned a "
            f"{type(output).__name__}; the cotangent must have the same structure, with a "
            "Tensor (or None for zeros) at each floating-point Tensor of the output; got "
            f"{type(cotangent).__name__}."
        )
    result = []
    for i, (value, tensor) in enumerate(zip(given, tensors, strict=True)):
        if value is None:
            value = torch.zeros_like(tensor)
        where = "" if isinstance(output, torch.Tensor) else f" at output tensor {i}"
        if (
            not isinstance(value, torch.Tensor)
            or tuple(value.shape) != tuple(tensor.shape)
            or value.dtype != tensor.dtype
        ):
            got = (
                f"shape {tuple(value.shape)} and dtype {value.dtype}"
                if isinstance(value, torch.Tensor)
                else type(value).__name__
            )
            raise GradCamError(
                f"{call}(...) pullback(cotangent): the cotangent{where} must be a Tensor "
                f"shaped like the output, shape {tuple(tensor.shape)} and dtype "
                f"{tensor.dtype}; got {got}. Build it with torch.zeros_like(output) (or "
                "of the output's Tensor), then set the scores to differentiate."
            )
        result.append(value)
    return tuple(result)
