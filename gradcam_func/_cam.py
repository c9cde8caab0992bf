"""cam: grad_cam's contract for every method, gradient or not, and any channel layout."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

import torch

from ._checks import GradCamError, _describe, as_args_tuple, check_flags, prepare_model
from ._grad_cam import ForwardSpec, batch_size_of, explain
from ._layer_choice import choose_layer
from ._scores import TargetScores
from ._split import _eager_no_grad, forward_with, model_state, run
from ._targets import TopK
from ._tokens import to_channels_first
from ._types import Autodiff, CamResult, ChunkSize, Inputs, Layers, Model, Params, Target, Targets
from .methods import METHODS
from .methods.perturbation import CONVENTIONS, ablation_weights, masking_weights
from .ops import relu as _relu

__all__ = ["cam"]

DEFAULT_BATCH_SIZE = 64
DEFAULT_SAMPLES = {"sscam": 35, "iscam": 10}
DEFAULT_NOISE = 2.0  # SS-CAM's noise on the [0, 1] masks, torchcam's default
# The conventions of each method that has more than the paper's.
_CONVENTIONS = {
    **CONVENTIONS,
    "eigencam": ("paper", "pytorch-grad-cam"),
    "eigengradcam": ("paper", "pytorch-grad-cam"),
}


def _eigen_options(method, convention):
    """Eigen-CAM's centering and sign: the paper's (neither centered nor signed by the
    SVD) or pytorch-grad-cam's (centered, the SVD's sign); EigenGrad-CAM is centered."""
    return dict(
        center=method == "eigengradcam" or convention == "pytorch-grad-cam",
        fix_sign=convention != "pytorch-grad-cam",
    )


def _gradient_method(method, convention, acts, grads, *, layout, relu, sum_channels):
    compute = METHODS[method].compute
    acts, grads = layout(acts), layout(grads)
    if method == "eigengradcam":
        return compute(acts, grads, relu=relu, **_eigen_options(method, convention))
    return compute(acts, grads, relu=relu, sum_channels=sum_channels)


def cam(
    model: Model,
    layer: Layers,
    inputs: Inputs,
    target: Target = None,
    *,
    method: str = "gradcam",
    targets: Targets = None,
    additional_forward_args: Any = None,
    params: Params | None = None,
    attribute_to_layer_input: bool = False,
    relu: bool = False,
    sum_channels: bool = True,
    chunk_size: ChunkSize = "auto",
    channel_axis: int = 1,
    token_grid: tuple[int, ...] | None = None,
    prefix_tokens: int = 0,
    batch_size: int | None = None,
    convention: str = "paper",
    samples: int | None = None,
    noise: float | None = None,
    generator: torch.Generator | None = None,
    autodiff: Autodiff = "auto",
) -> CamResult:
    """A CAM of ``model`` at ``layer`` by ``method``, with ``grad_cam``'s contract.

    method: a gradient method, "gradcam" (equal to ``grad_cam``), "gradcam++",
    "xgradcam", "hirescam", "layercam", "gradcam_elementwise", "eigengradcam"; or a
    gradient-free one, "scorecam", "sscam", "iscam", "ablationcam", "eigencam" (see
    ``gradcam_func.methods``). Everything else as in ``grad_cam``: targets (K in one
    forward), top_k, params, chunk_size, tuple layers (gradient methods).

    channel_axis=-1 treats a (B, T, D) token layer's D as the channels: (B, 1, T);
    token_grid=(h, w) with prefix_tokens=n drops n leading tokens (class token) and
    lays the rest on an (h, w) grid: (B, 1, h, w); token_grid="auto" infers both from
    the number of tokens and the image's size (ViT, DeiT, Swin, registers).

    Gradient-free methods: batch_size perturbed copies per forward (default 64);
    convention: "paper" (default), "pytorch-grad-cam" or "torchcam", where those
    libraries define the method otherwise (``methods.perturbation``, ``methods.eigen``);
    samples (SS-CAM 35, IS-CAM 10) and noise (SS-CAM, 2.0) as torchcam defines them;
    generator: for SS-CAM's noise. Eigen-CAM needs no target: every target of
    ``targets=`` gets the same map.

    autodiff: for gradient methods, "reverse", "forward" or "auto" (see ``grad_cam``).

    layer: a list of layers gives a list of maps, one per layer: from one forward and
    one pullback per target for gradient methods, from each layer's own forwards for
    gradient-free ones. ``fuse_layers`` combines them into one map.
    """
    call = "cam"
    check_flags(
        call,
        attribute_to_layer_input=attribute_to_layer_input,
        relu=relu,
        sum_channels=sum_channels,
    )
    if method not in METHODS:
        raise GradCamError(
            f"cam(..., method={method!r}): expected one of {', '.join(map(repr, METHODS))}."
        )
    kind = METHODS[method].kind
    _check_convention(method, convention, call)
    first = inputs[0] if isinstance(inputs, tuple) else inputs
    image_size = tuple(first.shape[2:]) if isinstance(first, torch.Tensor) else None
    layout = functools.partial(
        to_channels_first,
        channel_axis=channel_axis,
        token_grid=token_grid,
        prefix_tokens=prefix_tokens,
        image_size=image_size,
    )
    if method in ("eigengradcam", "eigencam") and not sum_channels:
        raise GradCamError(
            f"cam(..., method={method!r}, sum_channels=False): the principal "
            "component is one map, not one per channel. Drop sum_channels."
        )
    if kind == "gradient":
        cam_from = functools.partial(
            _gradient_method,
            method,
            convention,
            layout=layout,
            relu=relu,
            sum_channels=sum_channels,
        )
        forward = ForwardSpec(
            method, relu, sum_channels, autodiff, channel_axis == 1 and token_grid is None
        )
        return explain(
            cam_from,
            model,
            layer,
            inputs,
            target,
            targets=targets,
            additional_forward_args=additional_forward_args,
            params=params,
            attribute_to_layer_input=attribute_to_layer_input,
            chunk_size=chunk_size,
            call=call,
            forward=forward,
        )
    if layer is None:
        args = (inputs if isinstance(inputs, tuple) else (inputs,)) + as_args_tuple(
            additional_forward_args
        )
        layer = choose_layer(prepare_model(model, call), None, args, call)
    if autodiff == "forward":
        raise GradCamError(
            f"cam(..., method={method!r}, autodiff='forward'): {method} takes "
            "no gradient; autodiff applies to the gradient methods."
        )
    if isinstance(layer, list):  # gradient-free: each layer needs forwards of its own
        return _per_layer(
            model,
            layer,
            inputs,
            target,
            method=method,
            targets=targets,
            additional_forward_args=additional_forward_args,
            params=params,
            attribute_to_layer_input=attribute_to_layer_input,
            relu=relu,
            sum_channels=sum_channels,
            channel_axis=channel_axis,
            token_grid=token_grid,
            prefix_tokens=prefix_tokens,
            batch_size=batch_size,
            convention=convention,
            samples=samples,
            noise=noise,
            generator=generator,
        )
    if attribute_to_layer_input:
        raise GradCamError(
            f"cam(..., method={method!r}, attribute_to_layer_input=True): {method} weighs "
            "the channels of the layer's output; explain the output of the layer that "
            "feeds this one instead."
        )
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GradCamError(
            f"cam(..., batch_size={batch_size!r}): expected a positive int "
            "(perturbed copies per forward)."
        )
    with _eager_no_grad():
        output, acts = forward_with(
            model,
            layer,
            inputs,
            additional_forward_args=additional_forward_args,
            params=params,
            call=call,
        )
        if len(acts) != 1:
            raise GradCamError(
                f"cam(..., layer=..., method={method!r}): the layer's output "
                f"holds {len(acts)} tensors; {method} needs one."
            )
        native = acts[0]
        channels_first = layout(native)
        if kind == "eigen" and target is None and targets is None:  # nothing to check
            cam_map = _compute(method)(
                channels_first, relu=relu, **_eigen_options(method, convention)
            )
            return cam_map
        scores = TargetScores(output, target, targets, batch_size_of(inputs), call)
        if kind == "eigen":
            one = _compute(method)(channels_first, relu=relu, **_eigen_options(method, convention))
            cams = one[None].expand(len(scores.targets), *one.shape)
        else:
            if kind == "masking":
                weights = _masking(
                    method,
                    model,
                    inputs,
                    channels_first,
                    scores,
                    params,
                    additional_forward_args,
                    convention,
                    samples,
                    noise,
                    batch_size,
                    generator,
                    call,
                )
            else:
                weights = _ablation(
                    model,
                    layer,
                    inputs,
                    native,
                    scores,
                    params,
                    additional_forward_args,
                    channel_axis,
                    convention,
                    batch_size,
                    call,
                )
            cams = _weigh(weights, channels_first, sum_channels, relu)
    result = cams if scores.stacked else cams[0]
    return result if scores.classes is None else (result, scores.classes)


def _per_layer(model, layers, inputs, target, **options):
    """A gradient-free method at several layers: one call per layer; top_k's classes
    come back once."""
    results = [cam(model, one, inputs, target, **options) for one in layers]
    if (
        isinstance(results[0], tuple)
        and len(results[0]) == 2
        and isinstance(options.get("targets"), TopK)
    ):
        return [r[0] for r in results], results[0][1]
    return results


def _check_convention(method, convention, call):
    """Raise unless ``convention`` is one that ``method`` offers."""
    offered = _CONVENTIONS.get(method, ("paper",))
    if convention not in offered:
        raise GradCamError(
            f"{call}(..., method={method!r}, convention={convention!r}): "
            f"{method} offers the conventions {', '.join(map(repr, offered))}."
        )


def _weigh(weights, acts, sum_channels, relu):
    """(K, B, 1, *S) maps ``sum_c w_c A_c`` from weights (K, B, C), acts (B, C, *S)."""
    weighted = weights.view(*weights.shape, *[1] * (acts.ndim - 2)) * acts
    cams = weighted.sum(2, keepdim=True) if sum_channels else weighted
    return _relu(cams) if relu else cams


def _masking(
    method,
    model,
    inputs,
    acts,
    scores,
    params,
    extra,
    convention,
    samples,
    noise,
    batch_size,
    generator,
    call,
):
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    if not xs[0].is_floating_point() or xs[0].ndim != acts.ndim:
        raise GradCamError(
            f"cam(..., inputs=..., method={method!r}): masking needs a floating-point "
            f"input (B, C, *S) (the first, for several) with as many spatial axes as the "
            f"layer's maps {tuple(acts.shape)}; got {_describe(xs[0])}."
        )
    if method == "scorecam":
        samples = 1
    elif samples is None:
        samples = DEFAULT_SAMPLES[method]
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise GradCamError(f"cam(..., samples={samples!r}): expected a positive int.")
    model = prepare_model(model, call)
    state = model_state(model, params)
    extra = as_args_tuple(extra)

    def forward(masked, examples):  # the first input masked, the others as they were
        with torch.no_grad():
            return run(model, state, (masked, *(x[examples] for x in xs[1:]), *extra), call)[0]

    return masking_weights(
        forward,
        xs[0],
        acts,
        scores,
        method=method,
        convention=convention,
        samples=samples,
        noise=DEFAULT_NOISE if noise is None else noise,
        batch_size=batch_size,
        generator=generator,
    )


def _ablation(
    model, layer, inputs, acts, scores, params, extra, channel_axis, convention, batch_size, call
):
    examples = torch.arange(acts.shape[0], device=acts.device)
    options = dict(additional_forward_args=extra, params=params, call=call)

    def head(act):
        return scores(forward_with(model, layer, inputs, replace=(act,), **options)[0], examples)

    with torch.no_grad():
        clean = head(acts)
        return ablation_weights(
            head, acts, channel_axis, clean, convention=convention, batch_size=batch_size
        )


def _compute(method: str) -> Callable[..., Any]:
    """The map function of a "gradient" or "eigen" method (the kinds that have one)."""
    return cast("Callable[..., Any]", METHODS[method].compute)
