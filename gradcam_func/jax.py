"""Grad-CAM for JAX: the same pipeline with ``jax.vjp`` and ``jax.vmap``.

The only module of gradcam_func that imports jax. A JAX model is explained either
split by hand into ``trunk(inputs) -> activation`` and ``head(activation) -> output``,
or, for a Flax linen module, at a submodule named by its path (``grad_cam_flax``),
reached with ``flax.linen.intercept_methods``: no hand-splitting. Flax NNX and Equinox
models are explained by layer like torch models (``grad_cam_module``).

Shapes follow the torch side: activation (B, C, *S) gives a CAM (B, 1, *S), K targets
give (K, B, 1, *S). JAX convolutions are usually channels-last, (B, *S, C): pass
``channel_axis=-1`` and the CAM comes back channels-last too, (B, *S, 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

try:
    import jax
    import jax.numpy as jnp
except ImportError as error:
    raise ImportError(
        "gradcam_func.jax needs JAX: pip install 'gradcam_func[jax]' (or 'gradcam_func[flax]' "
        "for Flax models)."
    ) from error
import numpy as np
import torch

from . import ops
from ._checks import GradCamError, check_flags
from ._forward_mode import check_tolerance, mixes_examples
from ._jax_modules import examples_interact, model_kind, module_layer_vjp, module_split
from ._targets import TopK, check_index, top_k

__all__ = [
    "grad_cam",
    "layer_vjp",
    "grad_cam_flax",
    "flax_layer_vjp",
    "grad_cam_module",
    "module_layer_vjp",
    "top_k",
    "to_jax",
    "to_torch",
]


def layer_vjp(
    trunk: Callable[[Any], Any], head: Callable[[Any], Any], inputs: Any
) -> tuple[Any, Any, Callable[[Any], Any]]:
    """``(output, activation, pullback)`` for a model split as ``head(trunk(inputs))``.

    pullback(cotangent shaped like output) -> gradient at the activation; map it over
    stacked cotangents with ``jax.vmap``.
    """
    acts = trunk(inputs)
    output, vjp_fn = jax.vjp(head, acts)
    return output, acts, lambda cotangent: vjp_fn(cotangent)[0]


def cotangent(output, target, argument, call):
    """The cotangent (shaped like ``output``) selecting ``target``'s score per example.

    target: None (one score per example), an int, a tuple of ints, an integer array of
    shape (B,) (one class per example, output (B, N)), or a callable output -> (B,).
    """
    batch = output.shape[0]
    if target is None:
        if output.ndim == 0 or output[0].size != 1:
            raise GradCamError(
                f"{call}(..., {argument}=None): without a target the model must return one "
                f"score per example, but its output has shape {tuple(output.shape)}. Pass a target "
                "(an int, a per-example array or a callable) to pick one."
            )
        return jnp.ones_like(output)
    if callable(target):
        score, vjp_fn = jax.vjp(target, output)
        if getattr(score, "shape", None) != (batch,):
            raise GradCamError(
                f"{call}(..., {argument}={getattr(target, '__name__', 'fn')}): a callable "
                f"target must map the output {tuple(output.shape)} to one score per example, "
                f"shape ({batch},); it returned {getattr(score, 'shape', type(score))}. Reduce "
                "to one score per example, e.g. lambda out: out[:, k]."
            )
        return vjp_fn(jnp.ones_like(score))[0]
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        target = (target,)
    if isinstance(target, tuple):
        check_index(
            tuple(int(i) if isinstance(i, np.integer) else i for i in target),
            output,
            call,
            argument,
        )
        return jnp.zeros_like(output).at[(slice(None),) + tuple(target)].set(1)
    classes = jnp.asarray(target)
    if not jnp.issubdtype(classes.dtype, jnp.integer) or classes.ndim > 1:
        raise GradCamError(
            f"{call}(..., {argument}=...): expected None, an int, a tuple of ints, an integer "
            f"array of shape ({batch},), or a callable output -> (B,) score; got "
            f"{type(target).__name__} of shape {getattr(classes, 'shape', '?')}."
        )
    if output.ndim != 2:
        raise GradCamError(
            f"{call}(..., {argument}=...): an array of class indices needs an output of "
            f"shape (B, N), got {tuple(output.shape)}. Pass a tuple of ints or a "
            "callable target instead."
        )
    if not isinstance(classes, jax.core.Tracer):
        # JAX drops out-of-range scatter indices silently (a zero CAM): check when concrete
        _check_classes(np.asarray(classes), output, call, argument)
    if classes.ndim == 0:
        return jnp.zeros_like(output).at[:, classes].set(1)
    if classes.shape[0] != batch:
        raise GradCamError(
            f"{call}(..., {argument}=...): a per-example target needs one entry per example: "
            f"got {classes.shape[0]} entries for a batch of {batch}. Pass an array of "
            f"shape ({batch},)."
        )
    return jnp.zeros_like(output).at[jnp.arange(batch), classes].set(1)


def _check_classes(classes, output, call, argument):
    """Raise unless every class index in ``classes`` is in range for ``output`` (B, N)."""
    bad = (classes < -output.shape[1]) | (classes >= output.shape[1])
    if bad.any():
        raise GradCamError(
            f"{call}(..., {argument}=array({classes.tolist()})): class {classes[bad].flat[0]} "
            f"is out of range for the model's output, which has shape {tuple(output.shape)}. "
            f"Use indices in [0, {output.shape[1]})."
        )


def _explain(
    output,
    acts,
    pullback,
    target,
    targets,
    relu,
    sum_channels,
    channel_axis,
    call,
    autodiff,
    pushforward,
    chunk_size=None,
    coupled=False,
):
    """Shared by the entry points: cotangents, then the maps by a vmap of the pullback
    over them (``chunk_size`` cotangents at a time when given), or by forward mode
    (``autodiff``, ``_forward_cams``; ``coupled``: the model mixes a batch's examples)."""
    check_flags(call, relu=relu, sum_channels=sum_channels)
    if target is not None and targets is not None:
        raise GradCamError(f"{call}(..., target=..., targets=...): pass one of them.")
    if autodiff not in ("auto", "reverse", "forward"):
        raise GradCamError(
            f"{call}(..., autodiff={autodiff!r}): expected 'auto', 'reverse' or 'forward'."
        )

    def cams_of(cot):
        grads = jnp.moveaxis(pullback(cot), channel_axis, 1)
        cam = ops.grad_cam_from(
            jnp.moveaxis(acts, channel_axis, 1), grads, relu=relu, sum_channels=sum_channels
        )
        return jnp.moveaxis(cam, 1, channel_axis)

    classes = None
    if targets is None:
        cotangents = cotangent(output, target, "target", call)[None]
    else:
        if isinstance(targets, TopK):
            targets.check(output, call)
            classes = jax.lax.top_k(jax.lax.stop_gradient(output), targets.k)[1].T
            targets = list(classes)
        if len(targets) == 0:
            raise GradCamError(f"{call}(..., targets=[]): expected at least one target.")
        cotangents = jnp.stack(
            [cotangent(output, t, f"targets[{k}]", call) for k, t in enumerate(targets)]
        )
    cams = None
    # Under a transformation (jit, vmap, grad) values cannot be read: "auto" stays in
    # reverse mode there, and an explicit "forward" is taken at its word, unchecked.
    traced = any(isinstance(a, jax.core.Tracer) for a in (acts, output, cotangents))
    directions = acts.shape[channel_axis] * (acts.shape[0] if coupled else 1)
    if autodiff == "forward" or (
        autodiff == "auto" and not traced and directions < len(cotangents)
    ):
        cams = _forward_cams(
            acts, pushforward, cotangents, relu, sum_channels, channel_axis, chunk_size, coupled
        )
        if not (coupled or traced):  # examples assumed independent: checked on the first
            reverse = np.asarray(cams_of(cotangents[0]), np.float32)
            scale = max(float(np.abs(reverse).max()), 1e-30)
            tolerance = check_tolerance(float(jnp.finfo(acts.dtype).eps))
            first = np.asarray(cams[0], np.float32)
            if not np.allclose(first, reverse, rtol=tolerance, atol=0.1 * tolerance * scale):
                if autodiff == "forward":
                    raise mixes_examples(call)
                cams = None
    if cams is None:
        if targets is None:
            cams = cams_of(cotangents[0])[None]
        elif chunk_size is None:
            cams = jax.vmap(cams_of)(cotangents)
        else:
            cams = jax.lax.map(cams_of, cotangents, batch_size=chunk_size)
    if targets is None:
        return cams[0]
    return cams if classes is None else (cams, classes)


def _forward_cams(
    acts, pushforward, cotangents, relu, sum_channels, channel_axis, chunk_size, coupled
):
    """The K targets' maps (K, *the reverse-mode map's shape) from jvps.

    A target's derivative with respect to an offset added to all of channel c, divided
    by the positions, is the mean of its gradient over channel c: Grad-CAM's weight. One
    direction per channel offsets every example at once (C jvps); where the examples
    interact (``coupled``), each example's channels get directions of their own (B x C).
    pushforward: a tangent at ``acts`` -> the output's tangent; cotangents: (K, *output).
    """
    channels_first = jnp.moveaxis(acts, channel_axis, 1)  # (B, C, *S)
    batch, channels = channels_first.shape[:2]
    trailing = (1,) * (channels_first.ndim - 2)

    def tangent_of(index):  # (B, M): the output's tangent for one direction
        unit = jnp.arange(channels) == index % channels
        mine = jnp.arange(batch) == index // channels if coupled else jnp.ones(batch, bool)
        direction = (mine[:, None] & unit[None, :]).reshape((batch, channels) + trailing)
        direction = jnp.broadcast_to(direction, channels_first.shape).astype(acts.dtype)
        return pushforward(jnp.moveaxis(direction, 1, channel_axis)).reshape(batch, -1)

    indices = jnp.arange(channels * (batch if coupled else 1))
    if chunk_size is None:
        tangents = jax.vmap(tangent_of)(indices)
    else:
        tangents = jax.lax.map(tangent_of, indices, batch_size=chunk_size)  # (n, B, M)
    cots = cotangents.reshape(len(cotangents), batch, -1)  # (K, B, M)
    if coupled:  # a row (example, channel) is the derivative of the scores summed over B
        weights = jnp.einsum("kbm,nbm->kn", cots, tangents).reshape(-1, batch, channels)
    else:
        weights = jnp.einsum("kbm,nbm->kbn", cots, tangents)
    # in the activation's dtype, as reverse mode's gradients at the layer are (a bfloat16
    # layer before a float32 head gives float32 output tangents)
    weights = (weights / math.prod(channels_first.shape[2:])).astype(acts.dtype)

    def cam_of(w):  # (B, C) -> one target's map, channels at channel_axis
        w = w.reshape((batch, channels) + trailing)
        cam = ops.weight_activations(w, channels_first, sum_channels=sum_channels)
        return jnp.moveaxis(ops.relu(cam) if relu else cam, 1, channel_axis)

    return jax.vmap(cam_of)(weights)


def grad_cam(
    trunk: Callable[[Any], Any],
    head: Callable[[Any], Any],
    inputs: Any,
    target: Any = None,
    *,
    targets: Any = None,
    relu: bool = False,
    sum_channels: bool = True,
    channel_axis: int = 1,
    autodiff: str = "auto",
) -> Any:
    """Grad-CAM of ``head(trunk(inputs))`` at the activation ``trunk(inputs)``.

    Activation (B, C, *S) (or channels at ``channel_axis``); returns (B, 1, *S), or
    (K, B, 1, *S) for ``targets`` (K targets, one forward, one vmap over the pullback);
    with ``targets=top_k(k)`` returns (cams, classes (k, B)). jit-compatible.
    autodiff: "reverse" (one pullback per target), "forward" (one jvp per channel) or
    "auto": forward mode when the channels are fewer than the targets, outside jit.
    """
    output, acts, pullback = layer_vjp(trunk, head, inputs)
    return _explain(
        output,
        acts,
        pullback,
        target,
        targets,
        relu,
        sum_channels,
        channel_axis,
        "grad_cam",
        autodiff=autodiff,
        pushforward=lambda tangent: jax.jvp(head, (acts,), (tangent,))[1],
    )


def flax_layer_vjp(
    model: Any, variables: Any, inputs: Any, layer: str
) -> tuple[Any, Any, Callable[[Any], Any]]:
    """``(output, activation, pullback)`` of a Flax linen ``model`` at submodule ``layer``.

    layer: the submodule's path as a dotted name, e.g. ``"conv2"`` or ``"block.conv"``.
    One forward pass; the activation's shape comes from ``jax.eval_shape`` (no compute).
    """
    return _flax_split(model, variables, inputs, layer, "flax_layer_vjp")[:3]


def _flax_split(model, variables, inputs, layer, call):
    """``flax_layer_vjp``'s three and a pushforward: a tangent at the activation -> the
    output's tangent (a jvp: runs the forward again). call: the entry point's name."""
    import flax.linen as nn

    path = tuple(layer.split("."))

    def run(perturbation):
        seen = []

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name != "__call__" or context.module.path != path:
                return out
            if seen:
                raise GradCamError(
                    f"{call}(..., layer={layer!r}): the submodule is called "
                    "more than once in one forward pass, so its activation "
                    "is ambiguous. Pick a submodule that runs once."
                )
            seen.append(out)
            return out if perturbation is None else out + perturbation

        with nn.intercept_methods(interceptor):
            output = model.apply(variables, inputs)
        if not seen:
            raise GradCamError(
                f"{call}(..., layer={layer!r}): no submodule with that path "
                "ran in the forward pass. Paths are the names in "
                "variables['params'], joined with dots."
            )
        return output, seen[0]

    spec = jax.eval_shape(lambda: run(None)[1])
    zeros = jnp.zeros(spec.shape, spec.dtype)
    output, vjp_fn, acts = jax.vjp(run, zeros, has_aux=True)
    return (
        output,
        acts,
        lambda cotangent: vjp_fn(cotangent)[0],
        lambda tangent: jax.jvp(lambda p: run(p)[0], (zeros,), (tangent,))[1],
    )


def grad_cam_flax(
    model: Any,
    variables: Any,
    inputs: Any,
    layer: str,
    target: Any = None,
    *,
    targets: Any = None,
    relu: bool = False,
    sum_channels: bool = True,
    channel_axis: int = -1,
    autodiff: str = "auto",
) -> Any:
    """Grad-CAM of a Flax linen ``model`` at the submodule ``layer`` (dotted path).

    Flax convolutions are channels-last, so ``channel_axis`` defaults to -1: an
    activation (B, *S, C) gives (B, *S, 1), or (K, B, *S, 1) for ``targets``.
    autodiff: as in ``grad_cam``.
    """
    output, acts, pullback, pushforward = _flax_split(
        model, variables, inputs, layer, "grad_cam_flax"
    )
    return _explain(
        output,
        acts,
        pullback,
        target,
        targets,
        relu,
        sum_channels,
        channel_axis,
        "grad_cam_flax",
        autodiff=autodiff,
        pushforward=pushforward,
    )


def grad_cam_module(
    model: Any,
    layer: Any,
    inputs: Any,
    target: Any = None,
    *,
    targets: Any = None,
    relu: bool = False,
    sum_channels: bool = True,
    channel_axis: int | None = None,
    chunk_size: int | None = None,
    variables: Any = None,
    per_example: bool | None = None,
    attribute_to_layer_input: bool = False,
    state: Any = None,
    autodiff: str = "auto",
) -> Any:
    """Grad-CAM of a Flax NNX, Flax Linen or Equinox ``model`` at ``layer``, as
    ``gradcam_func.grad_cam`` explains a torch model.

    layer: a submodule object, or its attribute path (``"blocks.3.conv"``, list indices
    included). inputs: (B, ...). target / targets: every form of the torch path
    (an int, a tuple, an integer array, a callable ``output -> (B,)``, a list, ``top_k``).
    channel_axis: where the layer's channels are in the batched activation; by default
    -1 for Flax (channels-last, as ``nnx.Conv``) and 1 for Equinox (channels-first, as
    ``eqx.nn.Conv2d``). chunk_size: cotangents per vmapped pullback, or directions per
    vmapped jvp in forward mode (all at once when None). variables: a Linen module's
    variables. per_example, attribute_to_layer_input, state (an Equinox model's
    BatchNorm state): see ``module_layer_vjp`` (the gradient at the layer's input array
    through all its uses). autodiff: as in ``grad_cam``; where a BatchNorm normalizes by
    the batch, forward mode takes one direction per channel of each example (B x C).
    Returns (B, 1, *S) channels-first, or (B, *S, 1) channels-last; (K, B, ...) for
    ``targets``; ``(cams, classes (k, B))`` for ``top_k``. The model is left as one
    ordinary forward pass leaves it.
    """
    output, acts, pullback, pushforward = module_split(
        model,
        layer,
        inputs,
        variables=variables,
        per_example=per_example,
        attribute_to_layer_input=attribute_to_layer_input,
        state=state,
    )
    if channel_axis is None:
        channel_axis = 1 if model_kind(model) == "equinox" else -1
    return _explain(
        output,
        acts,
        pullback,
        target,
        targets,
        relu,
        sum_channels,
        channel_axis,
        "grad_cam_module",
        autodiff,
        pushforward,
        chunk_size=chunk_size,
        coupled=examples_interact(model),
    )


def to_jax(tensor: torch.Tensor) -> Any:
    """A torch tensor as a JAX array through DLPack, sharing its memory where JAX allows.

    Shared: dense layouts, contiguous or a permutation of contiguous (e.g. ``t.T``).
    Copied: slices with gaps and broadcast (expanded) tensors, which JAX refuses, and
    float64 while JAX's x64 mode is off (JAX makes it float32). The tensor is detached
    first: DLPack carries no autograd graph.
    """
    tensor = tensor.detach()
    strides = tensor.stride()
    by_stride = sorted(range(tensor.ndim), key=lambda d: -strides[d])
    if not tensor.permute(by_stride).is_contiguous():
        tensor = tensor.contiguous()
    return jnp.from_dlpack(tensor)


def to_torch(array: Any) -> torch.Tensor:
    """A JAX array as a torch tensor through DLPack, sharing memory where both allow.

    JAX arrays are immutable: treat the tensor as read-only, or ``.clone()`` it.
    """
    import torch

    return torch.from_dlpack(array)
