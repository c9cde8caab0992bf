"""grad_cam: one forward pass, a vmap of the pullback over cotangents, then the ops."""

from __future__ import annotations

import functools
import math
import time
import warnings
from typing import Any

import torch
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from . import ops
from ._checks import GradCamError, check_flags
from ._split import _eager_no_grad, split
from ._targets import TopK, cotangent, cotangents, every_class
from ._types import Autodiff, CamResult, ChunkSize, Inputs, Layer, Model, Params, Target, Targets

__all__ = [
    "grad_cam",
    "explain",
    "over_targets",
    "check_one_of",
    "batch_size_of",
    "default_chunk_size",
    "CHUNK_ELEMENTS",
]


def grad_cam(
    model: Model,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    targets: Targets = None,
    additional_forward_args: Any = None,
    params: Params | None = None,
    attribute_to_layer_input: bool = False,
    relu: bool = False,
    sum_channels: bool = True,
    chunk_size: ChunkSize = "auto",
    autodiff: Autodiff = "auto",
) -> CamResult:
    """Grad-CAM of ``model`` at ``layer``: Captum's ``LayerGradCam`` as a pure function.

    inputs: a Tensor or tuple of Tensors, dim 0 the batch B. target: any Captum target
    (None, int, tuple, Tensor, list) or a callable ``output -> (B,) score``, which
    receives the output as the model returns it (``out.logits`` for HuggingFace). For a
    layer activation (B, C, *S) returns (B, 1, *S) (or (B, C, *S) with
    ``sum_channels=False``), a tuple of those when the layer holds several Tensors.

    targets: a sequence of K targets instead of ``target``; returns the results stacked
    on a new axis 0, (K, B, 1, *S), from ONE forward pass. With ``targets=top_k(k)``
    returns ``(cams, classes)``, classes (k, B); ``targets="all"``: every class. chunk_size: targets per vmapped
    pullback; "auto" (the default) picks it from K and the activation's size
    (``default_chunk_size``), None runs all K at once.
    params: a mapping of parameter/buffer tensors used instead of the module's own.
    attribute_to_layer_input: the CAM of the tensor the layer receives, with its
    gradient through every use of that tensor (Captum's semantics).
    autodiff: "reverse" (one pullback per target), "forward" (one jvp per channel, see
    ``_forward_mode``) or "auto" (the cheaper for K and the layer); results are equal.
    """
    check_flags("grad_cam", relu=relu, sum_channels=sum_channels)
    return explain(
        functools.partial(ops.grad_cam_from, relu=relu, sum_channels=sum_channels),
        model,
        layer,
        inputs,
        target,
        targets=targets,
        additional_forward_args=additional_forward_args,
        params=params,
        attribute_to_layer_input=attribute_to_layer_input,
        chunk_size=chunk_size,
        call="grad_cam",
        forward=ForwardSpec("gradcam", relu, sum_channels, autodiff, True),
    )


class ForwardSpec(tuple):
    """What forward mode needs of a call: (method, relu, sum_channels, autodiff, ok);
    ok: the layer's layout lets forward mode serve it (channels on axis 1)."""

    def __new__(cls, method, relu, sum_channels, autodiff, ok):
        return super().__new__(cls, (method, relu, sum_channels, autodiff, ok))


def explain(
    cam_from,
    model,
    layer,
    inputs,
    target=None,
    *,
    targets=None,
    additional_forward_args=None,
    params=None,
    attribute_to_layer_input=False,
    chunk_size="auto",
    call="grad_cam",
    forward=None,
):
    """``grad_cam``'s pipeline with ``cam_from(acts, grads) -> cam`` as the last step.

    One forward pass; for ``targets``, ``cam_from`` runs inside the vmap over the K
    cotangents, so a chunk's (chunk, B, C, *S) gradients are freed before the next.
    A list of layers gives a list of results, from the same forward and pullbacks.
    forward: a ``ForwardSpec`` where forward mode may serve the call, else None.
    """
    check_one_of(target, targets, call)
    with _eager_no_grad():
        start = time.perf_counter()
        parts = split(
            model,
            layer,
            inputs,
            additional_forward_args=additional_forward_args,
            params=params,
            attribute_to_layer_input=attribute_to_layer_input,
            call=call,
        )
        forward_seconds = time.perf_counter() - start
        output, _, acts, pullback, finish, _ = parts
        if forward is not None:
            result = forward_mode(
                parts,
                forward,
                model,
                layer,
                inputs,
                target,
                targets,
                chunk_size,
                call,
                forward_seconds,
            )
            if result is not None:
                finish()
                return result

        def cams_of(cots):
            return tuple(
                tuple(cam_from(a, g) for a, g in zip(layer_acts, layer_grads, strict=True))
                for layer_acts, layer_grads in zip(acts, pullback(cots), strict=True)
            )

        batch = batch_size_of(inputs)
        per_example = sum(a.numel() for layer_acts in acts for a in layer_acts) // batch
        cams, classes = over_targets(
            cams_of, output, batch, target, targets, chunk_size, call, per_example
        )
    finish()
    cams = [c[0] if len(c) == 1 else c for c in cams]
    cams = cams if isinstance(layer, list) else cams[0]
    return cams if classes is None else (cams, classes)


def forward_mode(
    parts, spec, model, layer, inputs, target, targets, chunk_size, call, forward_seconds
):
    """The result by forward mode when ``spec`` and the call choose it, else None.

    forward_seconds: what the call's forward took, for "auto"'s estimate."""
    from ._forward_mode import (
        _coupled,
        check_tolerance,
        choose_mode,
        directions_needed,
        forward_cams,
        forward_is_cheaper,
        mixes_examples,
    )
    from ._scores import TargetScores
    from .methods import METHODS

    method, relu, sum_channels, autodiff, ok = spec
    output, tensors, acts, pullback, _, jvp = parts
    batch = batch_size_of(inputs)
    single = (
        not isinstance(layer, list)
        and len(acts) == 1
        and len(acts[0]) == 1
        and acts[0][0].ndim >= 3
        and acts[0][0].shape[0] == batch
        and ok
    )
    if isinstance(targets, TopK):
        k = targets.k
    else:
        resolved = every_class(targets, output, call)
        k = 1 if resolved is None else len(resolved) if hasattr(resolved, "__len__") else 1
    shape = tuple(acts[0][0].shape) if single else (batch, 0)
    if choose_mode(autodiff, method, k, shape, sum_channels, model, single, call) != "forward":
        return None
    # Under a torch.func transform the check below cannot read values: "auto" stays in
    # reverse mode there, and an explicit "forward" is taken at its word.
    transformed = bool(retrieve_all_functorch_interpreters())
    if transformed and autodiff == "auto":
        return None
    check_chunk_size(chunk_size, call)
    scores = TargetScores(output, target, targets, batch, call)
    coupled = _coupled(model)
    numel = acts[0][0].numel() // batch
    count = shape[1] if method != "hirescam" else math.prod(shape[2:])
    reverse_chunk = default_chunk_size(k, batch, numel) if chunk_size == "auto" else chunk_size or k
    if chunk_size == "auto":
        chunk_size = forward_chunk_size(count, batch, numel)
    timed = autodiff == "auto"  # (under a transform "auto" returned above)
    checked = not coupled and not transformed  # examples assumed independent: checked
    if timed or checked:
        # The first chunk of targets in reverse mode, one vmapped pullback as reverse
        # mode would run it: timed for "auto", and its first map checks forward mode's.
        probe = scores.targets[: reverse_chunk if timed else 1]

        def first_reverse_map():  # its chunk of gradients is freed on return
            grads = vmap_quietly(lambda cots: pullback(cots)[0][0])(
                cotangents(output, probe, batch, call)
            )[0]
            return METHODS[method].compute(acts[0][0], grads, relu=relu, sum_channels=sum_channels)

        start = time.perf_counter()
        reverse = first_reverse_map()
        chunk_seconds = time.perf_counter() - start
        directions = directions_needed(method, shape, sum_channels, coupled)
        if timed and not forward_is_cheaper(
            directions, chunk_size, k, forward_seconds, chunk_seconds, len(probe)
        ):
            return None
    cams = forward_cams(
        method,
        acts[0][0],
        jvp,
        scores,
        output,
        tensors,
        sum_channels=sum_channels,
        relu=relu,
        coupled=coupled,
        chunk_size=chunk_size,
    )
    if checked:
        first, reverse = cams[0].float(), reverse.float()
        scale = float(reverse.abs().max().clamp_min(1e-30))
        tolerance = check_tolerance(torch.finfo(cams.dtype).eps)
        if not torch.allclose(first, reverse, rtol=tolerance, atol=0.1 * tolerance * scale):
            if autodiff == "forward":
                raise mixes_examples(call)
            return None
    result = cams if scores.stacked else cams[0]
    return result if scores.classes is None else (result, scores.classes)


def batch_size_of(inputs):
    """B: dim 0 of the (first) input, already checked to be a batched Tensor."""
    return (inputs[0] if isinstance(inputs, tuple) else inputs).shape[0]


def check_one_of(target, targets, call):
    if target is not None and targets is not None:
        raise GradCamError(
            f"{call}(..., target=..., targets=...): pass one of them: target for a "
            "single explanation, targets for a stack of K explanations."
        )


# The memory a chunk of pullbacks may hold at the layer: 2**22 elements, 16 MiB float32.
CHUNK_ELEMENTS = 2**22


def default_chunk_size(k, batch, numel_per_example):
    """Targets per vmapped pullback for ``chunk_size="auto"``: as many as keep one
    chunk's gradients at the layer (chunk x B x the activation's elements per example)
    within ``CHUNK_ELEMENTS``; at least 1, at most K."""
    return max(1, min(k, CHUNK_ELEMENTS // max(1, batch * numel_per_example)))


def forward_chunk_size(count, batch, numel_per_example):
    """Directions per vmapped jvp for forward mode's ``chunk_size="auto"``: twice reverse
    mode's default chunk at the same layer, at most ``count``.

    Each chunk of directions runs the whole model again, so fewer, larger chunks pay
    more than in reverse mode (ResNet-18 `layer3`, batch 8, HiResCAM for 1000 classes:
    10.1 s in chunks of 10 directions, 8.0 s in chunks of 20; docs/performance.md).
    Counted in reverse mode's chunks, not in elements, where the division rounds down:
    ResNet-50 `layer3` gets 4 directions against reverse mode's 2 pullbacks, not the 5
    that 2^23 elements allow, and holds 1.33x reverse mode's peak at K = 100 (1.73x
    with 5; docs/performance.md).
    """
    return min(count, 2 * default_chunk_size(count, batch, numel_per_example))


def check_chunk_size(chunk_size, call):
    if chunk_size in ("auto", None):
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise GradCamError(
            f'{call}(..., chunk_size={chunk_size!r}): expected "auto" (the default: '
            "chosen from K and the activation's size), None (all K at once) or a "
            "positive int (targets per pullback)."
        )


def over_targets(fn, output, batch, target, targets, chunk_size, call, numel_per_example):
    """``fn(cotangents)`` for ``target``, or vmapped over the K targets' cotangents,
    ``chunk_size`` at a time ("auto": ``default_chunk_size``).

    Returns (result, classes): classes (k, B) for ``targets=top_k(k)``, else None.
    """
    check_chunk_size(chunk_size, call)
    if targets is None:
        return fn(cotangent(output, target, batch, call)), None
    classes = None
    if isinstance(targets, TopK):
        targets, classes = targets.targets(output, call)
    stacked = cotangents(output, targets, batch, call)
    if chunk_size == "auto":
        chunk_size = default_chunk_size(len(stacked[0]), batch, numel_per_example)
    return vmap_quietly(fn, chunk_size)(stacked), classes


_NO_BATCHING_RULE = "There is a performance drop because we have not yet implemented"


def vmap_quietly(fn, chunk_size=None):
    """``torch.func.vmap(fn, chunk_size=...)`` without torch's warning for ops that have
    no batching rule (the CPU flash-attention backward, the fused transformer encoder
    layer): they run one item at a time inside vmap, which is the loop the user would
    write, so the warning, repeated on every call, gives them nothing to act on."""

    def run(*args):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_BATCHING_RULE, category=UserWarning)
            return torch.func.vmap(fn, chunk_size=chunk_size)(*args)

    return run
