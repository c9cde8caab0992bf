"""The gradient at a layer's input in JAX, through every use of that array.

A layer's input is often used outside the layer too (a residual shortcut, a pre-norm
block's skip). The gradient with respect to the *array* (Captum's and the torch path's
``attribute_to_layer_input=True``) must count those uses, so the perturbation goes where
the array is made, not where the layer reads it. The layer marks its input with an
identity primitive; the forward is traced to a jaxpr once; the jaxpr is then evaluated
with ``delta`` added to the marked variable right where it is defined, so every reader
sees it. Shapes: the marked array (B, ...) with the batch first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Literal, Primitive
from jax.interpreters import batching

from ._checks import GradCamError

marker_p = Primitive("gradcam_func_layer_input")
marker_p.def_impl(lambda x, *, batch_axes: x)
marker_p.def_abstract_eval(lambda x, *, batch_axes: x)


def _batch_marker(args: Any, dims: Any, *, batch_axes: tuple[int, ...]) -> Any:
    """Under vmap, record where each mapped axis is (innermost vmap first), so the
    axes can be put back in the order the model's code sees them."""
    (x,), (dim,) = args, dims
    return marker_p.bind(x, batch_axes=(*batch_axes, dim)), dim


batching.primitive_batchers[marker_p] = _batch_marker


def mark(x: Any) -> Any:
    """``x`` unchanged, marked as the array to differentiate with respect to."""
    return marker_p.bind(x, batch_axes=())


def _marked(jaxpr: Any, call: str) -> Any:
    """The one top-level marker equation of ``jaxpr``."""
    found = [eqn for eqn in jaxpr.eqns if eqn.primitive is marker_p]
    if len(found) == 1:
        return found[0]
    raise GradCamError(
        f"{call}(..., attribute_to_layer_input=True): the layer's input is made inside a "
        "jit-compiled or otherwise nested part of the model, where its other uses cannot "
        "be reached. Call the model without an inner jax.jit, or explain the layer's "
        "output (attribute_to_layer_input=False)."
    )


def _bind(eqn: Any, ins: list[Any]) -> list[Any]:
    """One equation applied to ``ins`` (JAX's own ``eval_jaxpr`` step), as a list."""
    params = eqn.primitive.get_bind_params(eqn.params)
    with eqn.ctx.manager:
        if isinstance(params, tuple):  # JAX before 0.7: (subfuns, params)
            subfuns, params = params
            outs = eqn.primitive.bind(*subfuns, *ins, **params)
        else:
            outs = eqn.primitive.bind(*ins, **params)
    return outs if eqn.primitive.multiple_results else [outs]


def _evaluate(closed: Any, var: Any, delta: Any, args: list[Any]) -> tuple[list[Any], Any]:
    """``closed``'s outputs with ``delta`` added to ``var`` where it is defined, and the
    value of ``var`` itself."""
    env: dict[Any, Any] = {}

    def read(atom: Any) -> Any:
        return atom.val if isinstance(atom, Literal) else env[atom]

    def define(variables: Any, values: Any) -> None:
        for v, value in zip(variables, values, strict=True):
            env[v] = value + delta if v is var else value

    jaxpr = closed.jaxpr
    define(jaxpr.constvars, closed.consts)
    define(jaxpr.invars, args)
    for eqn in jaxpr.eqns:
        ins = [read(atom) for atom in eqn.invars]
        if eqn.primitive is marker_p:
            outs = ins
        else:
            outs = _bind(eqn, ins)
        define(eqn.outvars, outs)
    return [read(atom) for atom in jaxpr.outvars], env[var]


def input_split(
    forward: Callable[[Any], Any], inputs: Any, call: str
) -> tuple[Any, Any, Callable[[Any], Any], Callable[[Any], Any]]:
    """``(output, marked array (B, ...), pullback, pushforward)`` for ``forward(inputs)
    -> output`` (any pytree) whose layer marks an array with ``mark``: the pullback gives
    the gradient at that array through all its uses; the pushforward maps a tangent at
    the array (B, ...) to the output's tangent (a jvp: it runs the forward again)."""
    flat, in_tree = jax.tree_util.tree_flatten(inputs)
    closed, shape = jax.make_jaxpr(
        lambda *xs: forward(jax.tree_util.tree_unflatten(in_tree, xs)), return_shape=True
    )(*flat)
    out_tree = jax.tree_util.tree_structure(shape)
    eqn = _marked(closed.jaxpr, call)
    var, axes = eqn.invars[0], eqn.params["batch_axes"]
    if isinstance(var, Literal):
        raise GradCamError(
            f"{call}(..., attribute_to_layer_input=True): the layer's input is a constant."
        )
    if any(axis is None for axis in axes):
        raise GradCamError(
            f"{call}(...): the layer's array does not vary over a vmapped axis of the "
            "model (it is the same for every example), so it has no per-example CAM."
        )

    def run(delta: Any) -> tuple[Any, Any]:
        outs, value = _evaluate(closed, var, delta, flat)
        return jax.tree_util.tree_unflatten(out_tree, outs), value

    zeros = jnp.zeros(var.aval.shape, var.aval.dtype)
    output, vjp_fn, value = jax.vjp(run, zeros, has_aux=True)

    moves = list(enumerate(reversed(axes)))

    def batch_first(x: Any) -> Any:
        """The mapped axes first, outermost vmap first: (B, T, ...) for an Equinox model
        vmapped over examples whose layer runs vmapped over tokens."""
        for depth, axis in moves:
            x = jnp.moveaxis(x, axis + depth, depth)
        return x

    def as_marked(x: Any) -> Any:
        """``batch_first`` undone: the mapped axes back where the traced model has them."""
        for depth, axis in reversed(moves):
            x = jnp.moveaxis(x, depth, axis + depth)
        return x

    def pushforward(tangent: Any) -> Any:
        return jax.jvp(lambda delta: run(delta)[0], (zeros,), (as_marked(tangent),))[1]

    def pullback(cotangent: Any) -> Any:
        return batch_first(vjp_fn(cotangent)[0])

    return output, batch_first(value), pullback, pushforward
