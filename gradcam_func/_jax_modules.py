"""The model split at a named layer for JAX models written as objects (Flax NNX,
Equinox, Flax Linen): ``(output, activation, pullback)`` without editing the model.

The layer is swapped, inside a pure function, for a tap that calls it and marks its
output (or its input) with ``_jax_layer_input.mark``; ``input_split`` then perturbs the
marked array where it is made, so every use counts, also when the layer runs inside a
``jax.vmap`` of the model's own (Equinox layers over tokens). Equinox models are
replaced functionally (``eqx.tree_at``); NNX models are split into a graph definition
and a state, merged into a fresh copy inside the function, and the copy's state is
written back once, only when the forward changed it (BatchNorm statistics in train
mode, RNG counters); Linen submodules are reached with ``intercept_methods``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._checks import GradCamError, check_flags
from ._jax_layer_input import input_split, mark

CALL = "grad_cam_module"


def model_kind(model: Any, call: str = CALL) -> str:
    """The model's kind: "nnx", "linen" or "equinox"; else a GradCamError naming them."""
    try:
        import flax.linen
        from flax import nnx

        if isinstance(model, nnx.Module):
            return "nnx"
        if isinstance(model, flax.linen.Module):
            return "linen"
    except ImportError:
        pass
    try:
        import equinox as eqx

        if isinstance(model, eqx.Module):
            return "equinox"
    except ImportError:
        pass
    raise GradCamError(
        f"{call}(model=...): expected a Flax NNX module (flax.nnx.Module), a Flax Linen "
        "module (flax.linen.Module, with variables=...) or an Equinox module "
        f"(equinox.Module), got {type(model).__name__}. Split any other function by "
        "hand: grad_cam(trunk, head, inputs)."
    )


def _children(obj: Any) -> list[tuple[str, Any]]:
    """(name, child) pairs of an object's attributes, or a sequence's items by index."""
    if isinstance(obj, (list, tuple)):
        return [(str(i), child) for i, child in enumerate(obj)]
    if hasattr(obj, "__len__") and hasattr(obj, "__getitem__") and not hasattr(obj, "__dict__"):
        return [(str(i), obj[i]) for i in range(len(obj))]
    names = getattr(obj, "__dataclass_fields__", None) or vars(obj)
    return [(name, getattr(obj, name, None)) for name in names if not name.startswith("_")]


def _get(obj: Any, name: str) -> Any:
    if name.isdigit():
        return obj[int(name)]
    return getattr(obj, name)


def _at(obj: Any, path: Sequence[str]) -> Any:
    """The node at the attribute path ``path`` (already checked by ``path_of``)."""
    for name in path:
        obj = _get(obj, name)
    return obj


def path_of(model: Any, layer: Any, call: str) -> tuple[str, ...]:
    """The attribute path of ``layer`` in ``model``: parsed from a dotted string
    (``"blocks.3.conv"``), or found by identity for a submodule object."""
    if isinstance(layer, str):
        path = tuple(layer.split("."))
        node = model
        for depth, name in enumerate(path):
            try:
                node = _get(node, name)
            except (AttributeError, IndexError, KeyError, TypeError):
                where = ".".join(path[:depth]) or "the model"
                names = [n for n, _ in _children(node)]
                raise GradCamError(
                    f"{call}(..., layer={layer!r}): {where} has no attribute or item "
                    f"{name!r}; it has {names}. Name the layer by its attribute path, list "
                    "indices included, e.g. 'layers.2'."
                ) from None
        if not callable(node):
            raise GradCamError(
                f"{call}(..., layer={layer!r}): that path names a "
                f"{type(node).__name__}, not a submodule that is called."
            )
        return path
    found = _search(model, layer, (), set())
    if found is None:
        raise GradCamError(
            f"{call}(..., layer={type(layer).__name__} object): that object is not a "
            "submodule of the model. Pass a submodule of this model, or its attribute "
            "path as a string."
        )
    return found


def _search(node: Any, target: Any, path: tuple[str, ...], seen: set[int]) -> Any:
    if node is target:
        return path
    if id(node) in seen or isinstance(node, (str, bytes, int, float, bool, jax.Array)):
        return None
    seen.add(id(node))
    try:
        children = _children(node)
    except TypeError:
        return None
    for name, child in children:
        found = _search(child, target, (*path, name), seen)
        if found is not None:
            return found
    return None


class _Tap:
    """Stands in for the layer: calls it, records and marks its output, or its
    (first) input when ``on_input``."""

    def __init__(self, inner: Callable[..., Any], seen: list[Any], on_input: bool) -> None:
        self.inner, self.seen, self.on_input = inner, seen, on_input

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.on_input:
            self.seen.append(args[0])
            return self.inner(mark(args[0]), *args[1:], **kwargs)
        return _mark_output(self.inner(*args, **kwargs), self.seen)

    def __getattr__(self, name: str) -> Any:  # the parent may read the layer's fields
        return getattr(self.inner, name)


def _mark_output(out: Any, seen: list[Any]) -> Any:
    """The layer's output, marked; a tuple (an Equinox stateful layer's ``(output,
    state)``) at its first element."""
    if isinstance(out, tuple):
        seen.append(out[0])
        return (mark(out[0]), *out[1:])
    seen.append(out)
    return mark(out)


def _checked(seen: list[Any], layer: Any, call: str) -> Any:
    name = layer if isinstance(layer, str) else type(layer).__name__
    if not seen:
        raise GradCamError(
            f"{call}(..., layer={name!r}): the layer was never called in the forward "
            "pass, so it has no activation to explain. Pick a layer the model calls."
        )
    if len(seen) > 1:
        raise GradCamError(
            f"{call}(..., layer={name!r}): the layer is called {len(seen)} times in one "
            "forward pass, so its activation is ambiguous. Pick a layer that runs once."
        )
    return seen[0]


def module_layer_vjp(
    model: Any,
    layer: Any,
    inputs: Any,
    *,
    variables: Any = None,
    per_example: bool | None = None,
    attribute_to_layer_input: bool = False,
    state: Any = None,
) -> tuple[Any, Any, Callable[[Any], Any]]:
    """``(output, activation, pullback)`` of an NNX, Linen or Equinox ``model`` at
    ``layer``: ``module_split`` without its pushforward."""
    return module_split(
        model,
        layer,
        inputs,
        variables=variables,
        per_example=per_example,
        attribute_to_layer_input=attribute_to_layer_input,
        state=state,
        call="module_layer_vjp",
    )[:3]


def module_split(
    model: Any,
    layer: Any,
    inputs: Any,
    *,
    variables: Any = None,
    per_example: bool | None = None,
    attribute_to_layer_input: bool = False,
    state: Any = None,
    call: str = CALL,
) -> tuple[Any, Any, Callable[[Any], Any], Callable[[Any], Any]]:
    """``(output, activation, pullback, pushforward)`` of an NNX, Linen or Equinox
    ``model`` at ``layer``; pushforward: a tangent at the activation -> the output's.

    inputs: (B, ...). per_example (Equinox only): the model takes one example and is
    vmapped over the batch, the default, as Equinox layers are written per example;
    False calls it on the whole batch. NNX models are called on the batch. The
    activation is (B, *the layer's output per example). A Flax Linen module needs its
    ``variables`` and a dotted path (its submodules exist only inside ``apply``).
    attribute_to_layer_input: the layer's (first) input instead of its output, with the
    gradient with respect to that array through all its uses, as the torch path and
    Captum define it. state: an Equinox model's ``eqx.nn.State`` (BatchNorm), called
    as ``model(x, state) -> (output, state)``, under ``jax.vmap(..., axis_name="batch")``
    per example; the state it returns is dropped, so explain a model in inference mode.
    call: the entry point the errors name.
    """
    check_flags(call, attribute_to_layer_input=attribute_to_layer_input)
    kind = model_kind(model, call)
    if kind == "linen":
        if variables is None or not isinstance(layer, str):
            raise GradCamError(
                f"{call}(model=<Linen {type(model).__name__}>, ...): a Linen module needs "
                "variables=model.init(...) or the trained ones, and the layer as its "
                "dotted path, e.g. layer='conv2'."
            )
        forward = _linen_marked(model, variables, layer, attribute_to_layer_input, call)
        return input_split(forward, inputs, call)
    if state is not None and kind != "equinox":
        raise GradCamError(
            f"{call}(..., state=...): only Equinox models take a separate state; an "
            f"{kind} module holds its own. Leave state out."
        )
    if variables is not None:
        raise GradCamError(
            f"{call}(..., variables=...): only Flax Linen modules take variables; an "
            f"{kind} module holds its own. Leave variables out."
        )
    path = path_of(model, layer, call)
    if per_example is None:
        per_example = kind == "equinox"
    if kind == "equinox":
        forward = _equinox_marked(
            model, path, layer, per_example, attribute_to_layer_input, state, call
        )
        return input_split(forward, inputs, call)
    if per_example:
        raise GradCamError(
            f"{call}(..., per_example=True): NNX modules take batches; per_example is for "
            "Equinox models written for one example."
        )
    forward = _nnx_marked(model, path, layer, attribute_to_layer_input, call)
    (output, new_state), acts, pullback, pushforward = input_split(forward, inputs, call)
    _write_back(model, new_state)
    return (
        output,
        acts,
        lambda cotangent: pullback((cotangent, _zeros_like(new_state))),
        lambda tangent: pushforward(tangent)[0],
    )


def examples_interact(model: Any) -> bool:
    """Whether the model mixes the examples of a batch: a BatchNorm that normalizes by
    the batch's statistics (NNX with ``use_running_average=False``, Equinox outside
    inference mode)."""
    kind = model_kind(model)
    if kind == "nnx":
        from flax import nnx

        return any(
            isinstance(node, nnx.BatchNorm) and not node.use_running_average
            for _, node in nnx.iter_graph(model)
        )
    if kind == "equinox":
        import equinox as eqx

        is_norm = lambda node: isinstance(node, eqx.nn.BatchNorm)
        return any(
            is_norm(node) and not node.inference
            for node in jax.tree_util.tree_leaves(model, is_leaf=is_norm)
        )
    return False  # a Linen module here runs without mutable statistics: inference


def _equinox_marked(
    model: Any,
    path: Sequence[str],
    layer: Any,
    per_example: bool,
    on_input: bool,
    state: Any,
    call: str,
) -> Callable[[Any], Any]:
    """The Equinox model's forward on a batch, with the layer marking its array."""
    import equinox as eqx

    def where(m: Any) -> Any:
        return _at(m, path)

    inner = where(model)

    def forward(x: Any) -> Any:
        seen: list[Any] = []
        tapped = eqx.tree_at(where, model, _Tap(inner, seen, on_input))
        out = tapped(x) if state is None else tapped(x, state)[0]
        _checked(seen, layer, call)
        return out

    return jax.vmap(forward, axis_name="batch") if per_example else forward


def _nnx_marked(
    model: Any, path: Sequence[str], layer: Any, on_input: bool, call: str
) -> Callable[[Any], Any]:
    """A fresh copy of the NNX model's forward, with the layer marking its array:
    ``x -> (output, the copy's state after the forward)``."""
    from flax import nnx

    graphdef, state = nnx.split(model)

    def forward(x: Any) -> Any:
        # fresh Variables, made in this trace, so the forward may update them here
        copy = nnx.merge(graphdef, jax.tree_util.tree_map(lambda a: a, state))
        parent = _at(copy, path[:-1])
        inner = _get(parent, path[-1])
        seen: list[Any] = []
        _set(parent, path[-1], _Tap(inner, seen, on_input))
        try:
            out = copy(x)
        finally:
            _set(parent, path[-1], inner)
        _checked(seen, layer, call)
        return out, nnx.state(copy)

    return forward


def _linen_marked(
    model: Any, variables: Any, layer: str, on_input: bool, call: str
) -> Callable[[Any], Any]:
    """``model.apply(variables, x)`` with the submodule at ``layer`` marking its array."""
    import flax.linen as nn

    path = tuple(layer.split("."))

    def forward(x: Any) -> Any:
        seen: list[Any] = []

        def interceptor(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
            if context.method_name != "__call__" or context.module.path != path:
                return next_fun(*args, **kwargs)
            if on_input:
                seen.append(args[0])
                return next_fun(mark(args[0]), *args[1:], **kwargs)
            return _mark_output(next_fun(*args, **kwargs), seen)

        with nn.intercept_methods(interceptor):
            output = model.apply(variables, x)
        _checked(seen, layer, call)
        return output

    return forward


def _zeros_like(tree: Any) -> Any:
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


def _set(parent: Any, name: str, value: Any) -> None:
    if name.isdigit():
        parent[int(name)] = value
    else:
        object.__setattr__(parent, name, value)


def _write_back(model: Any, new_state: Any) -> None:
    """Apply the forward's state changes to the user's module, once; nothing when the
    forward changed nothing (eval mode), so the module's arrays stay the same objects."""
    from flax import nnx

    old = jax.tree_util.tree_leaves(nnx.state(model))
    new = jax.tree_util.tree_leaves(new_state)
    if len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True)):
        return
    nnx.update(model, new_state)
