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
from ._checks import GradCamError
from ._jax_modules import model_kind, module_layer_vjp
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


def cotangent(output, target, argument="target", call="grad_cam"):
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
    output, acts, pullback, target, targets, relu, sum_channels, channel_axis, call, chunk_size=None
):
    """Shared by the entry points: cotangents, vmap of the pullback (``chunk_size``
    cotangents at a time when given), ops."""
    if target is not None and targets is not None:
        raise GradCamError(f"{call}(..., target=..., targets=...): pass one of them.")

    def cams_of(cot):
        grads = jnp.moveaxis(pullback(cot), channel_axis, 1)
        cam = ops.grad_cam_from(
            jnp.moveaxis(acts, channel_axis, 1), grads, relu=relu, sum_channels=sum_channels
        )
        return jnp.moveaxis(cam, 1, channel_axis)

    if targets is None:
        return cams_of(cotangent(output, target, call=call))
    classes = None
    if isinstance(targets, TopK):
        targets.check(output, call)
        classes = jax.lax.top_k(jax.lax.stop_gradient(output), targets.k)[1].T
        targets = list(classes)
    if len(targets) == 0:
        raise GradCamError(f"{call}(..., targets=[]): expected at least one target.")
    cotangents = jnp.stack(
        [cotangent(output, t, f"targets[{k}]", call) for k, t in enumerate(targets)]
    )
    if chunk_size is None:
        cams = jax.vmap(cams_of)(cotangents)
    else:
        cams = jax.lax.map(cams_of, cotangents, batch_size=chunk_size)
    return cams if classes is None else (cams, classes)


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
) -> Any:
    """Grad-CAM of ``head(trunk(inputs))`` at the activation ``trunk(inputs)``.

    Activation (B, C, *S) (or channels at ``channel_axis``); returns (B, 1, *S), or
    (K, B, 1, *S) for ``targets`` (K targets, one forward, one vmap over the pullback);
    with ``targets=top_k(k)`` returns (cams, classes (k, B)). jit-compatible.
    """
    output, acts, pullback = layer_vjp(trunk, head, inputs)
    return _explain(
        output, acts, pullback, target, targets, relu, sum_channels, channel_axis, "grad_cam"
    )


def flax_layer_vjp(
    model: Any, variables: Any, inputs: Any, layer: str
) -> tuple[Any, Any, Callable[[Any], Any]]:
    """``(output, activation, pullback)`` of a Flax linen ``model`` at submodule ``layer``.

    layer: the submodule's path as a dotted name, e.g. ``"conv2"`` or ``"block.conv"``.
    One forward pass; the activation's shape comes from ``jax.eval_shape`` (no compute).
    """
    import flax.linen as nn

    path = tuple(layer.split("."))
    call = "grad_cam_flax"

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
    return output, acts, lambda cotangent: vjp_fn(cotangent)[0]


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
) -> Any:
    """Grad-CAM of a Flax linen ``model`` at the submodule ``layer`` (dotted path).

    Flax convolutions are channels-last, so ``channel_axis`` defaults to -1: an
    activation (B, *S, C) gives (B, *S, 1), or (K, B, *S, 1) for ``targets``.
    """
    output, acts, pullback = flax_layer_vjp(model, variables, inputs, layer)
    return _explain(
        output, acts, pullback, target, targets, relu, sum_channels, channel_axis, "grad_cam_flax"
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
) -> Any:
    """Grad-CAM of a Flax NNX, Flax Linen or Equinox ``model`` at ``layer``, as
    ``gradcam_func.grad_cam`` explains a torch model.

    layer: a submodule object, or its attribute path (``"blocks.3.conv"``, list indices
    included). inputs: (B, ...). target / targets: every form of the torch path
    (an int, a tuple, an integer array, a callable ``output -> (B,)``, a list, ``top_k``).
    channel_axis: where the layer's channels are in the batched activation; by default
    -1 for Flax (channels-last, as ``nnx.Conv``) and 1 for Equinox (channels-first, as
    ``eqx.nn.Conv2d``). chunk_size: cotangents per vmapped pullback (all at once when
    None). variables: a Linen module's variables. per_example, attribute_to_layer_input,
    state (an Equinox model's BatchNorm state): see ``module_layer_vjp`` (the gradient at the layer's input array through all its
    uses). Returns (B, 1, *S) channels-first, or (B, *S, 1) channels-last; (K, B, ...) for ``targets``; ``(cams, classes (k, B))``
    for ``top_k``. The model is left as one ordinary forward pass leaves it.
    """
    output, acts, pullback = module_layer_vjp(
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
        chunk_size,
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
