"""compile_grad_cam: Grad-CAM for class indices as one ``torch.compile`` graph.

``grad_cam`` registers its hook, probes shapes, times modes and filters warnings inside
the call; under ``torch.compile`` each of those breaks the graph, so the forward and
the pullbacks run eagerly between small compiled pieces. Here everything that breaks a
graph happens outside the compiled function, in each call: the shape comes from the
same probe and cache as ``grad_cam``'s, and one fixed hook function is registered on
the layer for the call and removed after it (the module ends with the hooks it had).
The compiled function is pure given that hook: a ``torch.func.vjp`` of the forward with
respect to a zero perturbation that the hook adds to the layer's output, the K one-hot
cotangents built in the graph from an index tensor, and the vmapped pullback with the
Grad-CAM formula, so Inductor sees the forward, the K pullbacks and the maps at once.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from . import ops
from ._checks import (
    GradCamError,
    as_args_tuple,
    as_tensor_tuple,
    check_flags,
    prepare_model,
    resolve_layer,
)
from ._grad_cam import batch_size_of, check_chunk_size, check_one_of, default_chunk_size
from ._split import _Stale, layer_spec, model_state
from ._types import ChunkSize, Inputs, Layer

__all__ = ["compile_grad_cam"]

_CALL = "compile_grad_cam"
_TRACED_CACHE = "Dynamo detected a call to a `functools.lru_cache`-wrapped function"
# The perturbation for the call in progress, then the layer's perturbed output: the one
# place the fixed hook below reads and writes, so the compiled graph needs no new hook.
_TAP: list[torch.Tensor] = []


def _tap(module, args, output):
    """Forward hook: the layer's output plus the call's perturbation, kept in ``_TAP``;
    a second call of the layer in the same forward is only recorded."""
    if len(_TAP) != 1:
        _TAP.append(output)
        return None
    if not isinstance(output, torch.Tensor) or output.shape != _TAP[0].shape:
        raise _Stale
    tapped = output + _TAP[0]
    _TAP.append(tapped.clone())  # intact if the model then works on it in place
    return tapped


def _cams(model, state, args, index, buffers, shape, dtype, relu, sum_channels, chunk_size):
    """The function compiled -> (maps (K, B, 1, *S), classes N, the forward's buffers).

    index: (K, B) class indices, or None for every class; buffers: names of buffers the
    forward may update (train mode), run on copies and returned so the caller writes
    them back once the call has succeeded.
    """
    copies, calls = {}, []

    def forward(perturbation):
        copies.update({name: state[name].clone() for name in buffers})
        _TAP.append(perturbation)
        try:
            output = torch.func.functional_call(model, {**state, **copies}, args)
            activation = _TAP[1]
            calls.append(len(_TAP) - 1)
        finally:
            _TAP.clear()
        return output, activation

    zeros = torch.zeros(shape, dtype=dtype, device=args[0].device)
    output, pullback, activation = torch.func.vjp(forward, zeros, has_aux=True)
    if calls != [1]:
        raise GradCamError(
            f"{_CALL}(model, layer): the layer is called {calls[0]} times in one forward "
            "pass (shared weights), so its activation is ambiguous. Pick a layer that runs "
            "once."
        )
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        raise GradCamError(
            f"{_CALL}: the model's output must be a Tensor of class scores (B, N) for "
            f"class-index targets; got {_shown(output)}. For other outputs and targets "
            "(a callable score, a HuggingFace output) use grad_cam, or wrap the model so "
            "it returns the scores."
        )
    classes = output.shape[-1]
    if index is None:
        index = torch.arange(classes, device=output.device)[:, None].expand(-1, output.shape[0])
    # Indices past the last class are refused once the call returns (the count is only
    # known here); clamped meanwhile, as one_hot's own check would abort the process.
    selectors = torch.nn.functional.one_hot(index.clamp(max=classes - 1), classes)
    selectors = selectors.to(output.dtype)

    def one_target(cotangent):
        (grads,) = pullback(cotangent)
        return ops.grad_cam_from(activation, grads, relu=relu, sum_channels=sum_channels)

    maps = torch.func.vmap(one_target, chunk_size=chunk_size)(selectors)
    return maps, classes, copies


def _shown(output):
    if isinstance(output, torch.Tensor):
        return f"a Tensor of shape {tuple(output.shape)}"
    return f"a {type(output).__name__}"


def _indices(target, targets, batch, device):
    """(K, B) int64 class indices from ``target`` (K = 1) or ``targets``; None for "all"."""
    if targets is None and target is None:
        raise GradCamError(
            f"{_CALL}(...)(inputs): expected target=class (an int, or one per example) "
            "or targets=[...] (K of those, or 'all'); got neither. For a score without a "
            "class index, use grad_cam with a callable target."
        )
    if isinstance(targets, str) and targets == "all":
        return None
    argument = "target" if targets is None else "targets"
    given = [target] if targets is None else targets
    try:
        rows = [_row(one, batch) for one in given]
    except (TypeError, ValueError, RuntimeError) as error:
        raise GradCamError(
            f"{_CALL}(...)(inputs, {argument}=...): expected class indices: an int or "
            f"{batch} ints (one per example) per target, a sequence of those, an integer "
            f"Tensor (K,) or (K, {batch}), or 'all'; got {_about(given)} ({error}). For "
            "callables, tuples or top_k, use grad_cam."
        ) from None
    if not rows:
        raise GradCamError(f"{_CALL}(...)(inputs, targets=[]): expected at least one target.")
    index = torch.stack(rows).to(device)
    if bool((index < 0).any()):
        raise GradCamError(
            f"{_CALL}(...)(inputs, {argument}=...): class indices must be >= 0; got "
            f"{int(index.min())}. Write the class as its positive index."
        )
    return index


def _row(one, batch):
    """One target's (B,) indices: an int for every example, or one per example."""
    row = torch.as_tensor(one)
    if row.is_floating_point() or row.dtype == torch.bool or row.ndim > 1:
        raise TypeError("not integer class indices")
    if row.ndim == 1 and len(row) != batch:
        raise ValueError(f"{len(row)} indices for {batch} examples")
    return row.to(torch.int64).expand(batch)


def _about(given):
    if isinstance(given, torch.Tensor):
        return f"a Tensor of shape {tuple(given.shape)} and dtype {given.dtype}"
    return repr(given)[:80]


def compile_grad_cam(
    model: nn.Module,
    layer: Layer,
    *,
    relu: bool = False,
    sum_channels: bool = True,
    chunk_size: ChunkSize = "auto",
    **compile_options: Any,
) -> Callable[..., torch.Tensor]:
    """Grad-CAM at ``layer`` for class indices, compiled by ``torch.compile`` in one graph.

    Returns ``explain(inputs, target=None, *, targets=None,
    additional_forward_args=None)``: with ``targets`` (K class indices, each an int or
    one per example, an integer Tensor (K,) or (K, B), or "all") it returns
    (K, B, 1, *S), with ``target`` (B, 1, *S): the values ``grad_cam`` returns for the
    same arguments. The model must return class scores (B, N) and the layer one Tensor
    (B, C, *S). Compilation happens on the first call and again for new input shapes or
    K; ``compile_options`` go to ``torch.compile`` (``fullgraph=True`` to be told of any
    graph break, ``mode=...``). The layer's hook lives only for each call.
    """
    check_flags(_CALL, relu=relu, sum_channels=sum_channels)
    model = prepare_model(model, _CALL)
    if not isinstance(model, nn.Module):
        raise GradCamError(
            f"{_CALL}(model=...): expected an nn.Module (its parameters go into the "
            f"compiled graph); got a {type(model).__name__}. Use grad_cam for a plain "
            "callable."
        )
    module = resolve_layer(model, layer, _CALL)
    check_chunk_size(chunk_size, _CALL)
    # Dynamo keeps its compiled graphs, and counts recompilations against a limit (8),
    # per code object: each explainer gets a code object of its own, so explaining many
    # models (or layers) does not send later ones back to eager.
    own = types.FunctionType(
        _cams.__code__.replace(),
        _cams.__globals__,
        _cams.__name__,
        _cams.__defaults__,
        _cams.__closure__,
    )
    compiled = torch.compile(own, **compile_options)

    def explain(
        inputs: Inputs,
        target: Any = None,
        *,
        targets: Sequence[Any] | torch.Tensor | str | None = None,
        additional_forward_args: Any = None,
    ) -> torch.Tensor:
        """Grad-CAM maps (K, B, 1, *S) for ``targets``, (B, 1, *S) for ``target``."""
        check_one_of(target, targets, _CALL)
        inputs = as_tensor_tuple(inputs, _CALL)
        args = inputs + as_args_tuple(additional_forward_args)
        batch = batch_size_of(inputs)
        index = _indices(target, targets, batch, inputs[0].device)
        state = model_state(model, None)
        buffers = tuple(name for name, _ in model.named_buffers()) if model.training else ()
        for fresh in (False, True):
            shape, dtype = _layer_tensor(model, module, args, state, fresh)
            numel = functools.reduce(lambda a, b: a * b, shape[1:], 1)
            chunk = chunk_size
            if chunk_size == "auto":  # "all": as many per chunk as the budget allows
                k = 2**62 if index is None else len(index)
                chunk = default_chunk_size(k, batch, numel)
            handle = module.register_forward_hook(_tap)
            try:
                with warnings.catch_warnings():
                    # array_api_compat caches the namespace of each array type: a pure
                    # lookup that Dynamo traces through, warning each time it compiles.
                    warnings.filterwarnings("ignore", _TRACED_CACHE, UserWarning)
                    maps, classes, updated = compiled(
                        model, state, args, index, buffers, shape, dtype, relu, sum_channels, chunk
                    )
            except _Stale:
                continue
            finally:
                handle.remove()
                _TAP.clear()
            if index is not None and bool((index >= classes).any()):
                raise GradCamError(
                    f"{_CALL}(...)(inputs, {'target' if targets is None else 'targets'}=...): "
                    f"class index {int(index.max())} is out of range for the model's "
                    f"{classes} classes."
                )
            with torch.no_grad():
                for name, tensor in model.named_buffers():
                    if name in updated:
                        tensor.copy_(updated[name])
            return maps[0] if targets is None else maps
        raise GradCamError(
            f"{_CALL}(model, layer): the layer's output changes shape between two runs on "
            "the same inputs, so it cannot be compiled as one graph. Use grad_cam."
        )

    return explain


def _layer_tensor(model, module, args, state, fresh):
    """(shape, dtype) of the one Tensor the layer returns, from the shared probe."""
    spec = layer_spec(model, module, args, state, False, _CALL, fresh=fresh)
    if len(spec) != 1 or spec[0][2] != ("hook", 0):
        raise GradCamError(
            f"{_CALL}(model, layer): the layer must return one Tensor that it makes "
            f"itself; it returns {len(spec)} floating Tensor(s), or returns the one it "
            "received. Pick the layer that makes the activation, or use grad_cam."
        )
    return spec[0][0], spec[0][1]
