"""The properties a CAM explainer should have, one ``check_*`` each, and ``check_all``.

An *explainer* is a function with ``grad_cam``'s signature:
``explainer(model, layer, inputs, target, *, targets=None, relu=False,
sum_channels=True, params=None, ...) -> CAM`` (B, 1, *S) (gradcam_func's ``grad_cam``,
``functools.partial(cam, method=...)``, your own, or a wrapper around Captum). Each
check raises an AssertionError that names the property, the worst element with its
index, both values and the tolerance, and how many elements broke it.

The properties, exactly:

- batch_independence: ``E(x)[i] == E(x[i:i+1])[0]`` for every example i (per-example
  targets sliced alike). Holds in eval mode.
- target_stacking: ``E(targets=[t1, ..., tK])[k] == E(target=tk)``.
- target_linearity: ``E(a s1 + b s2) == a E(s1) + b E(s2)`` for scores s1, s2 and
  reals a, b (here 1.7 and -0.6), before any ReLU.
- scale_equivariance: ``E(a s, relu=True) == a E(s, relu=True)`` for a > 0 (here 2.5).
- channel_permutation: permuting the layer's output channels, and undoing it right
  after the layer, leaves the CAM unchanged.
- relu_consistency: ``E(relu=True) == max(E(relu=False), 0)``.
- channel_sum: ``E(sum_channels=False).sum(1, keepdim=True) == E(sum_channels=True)``.
- no_side_effects: parameters, buffers, hooks, the inputs and every ``training`` flag
  are unchanged after a call, and after a call in which the model raises. Holds in
  eval mode (in train mode a forward updates BatchNorm's statistics, by design).
- differentiable: in float64, the gradient of ``sum(E * w)`` with respect to ``params``
  and the inputs, taken with ``torch.func.grad``, matches central finite differences
  along a random direction.

Tolerances come from ``TOLERANCES`` by the result's dtype; every check takes
``tolerance=dict(rtol=..., atol=...)`` to override it.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._split import model_state, run
from .._targets import cotangent
from .._types import Explainer, Inputs, Layer, Target

__all__ = [
    "TOLERANCES",
    "FINITE_DIFFERENCES",
    "PROPERTIES",
    "check_all",
    "check_batch_independence",
    "check_target_stacking",
    "check_target_linearity",
    "check_scale_equivariance",
    "check_channel_permutation",
    "check_relu_consistency",
    "check_channel_sum",
    "check_no_side_effects",
    "check_differentiable",
    "properties_of",
]

TOLERANCES = {
    torch.float16: dict(rtol=1e-2, atol=1e-3),
    torch.bfloat16: dict(rtol=2e-2, atol=1e-2),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float64: dict(rtol=1e-7, atol=1e-9),
}

# Central differences with step 1e-6 in float64, against the gradient along a direction.
FINITE_DIFFERENCES = dict(step=1e-6, rtol=1e-5, atol=1e-8)


def _parts(value):
    return value if isinstance(value, tuple) else (value,)


def assert_matches(prop, actual, expected, tolerance=None):
    """Raise AssertionError for ``prop`` unless ``actual`` matches ``expected``."""
    actual, expected = _parts(actual), _parts(expected)
    if len(actual) != len(expected):
        raise AssertionError(
            f"{prop}: {len(actual)} results where {len(expected)} were "
            "expected (a tuple for a layer with several tensors)."
        )
    for part, (a, e) in enumerate(zip(actual, expected, strict=True)):
        a, e = torch.as_tensor(a).detach(), torch.as_tensor(e).detach()
        if a.shape != e.shape:
            raise AssertionError(f"{prop}: shape {tuple(a.shape)}, expected {tuple(e.shape)}.")
        tol = tolerance or TOLERANCES.get(e.dtype, TOLERANCES[torch.float32])
        a64, e64 = a.double(), e.double()
        difference = (a64 - e64).abs()
        allowed = tol["atol"] + tol["rtol"] * e64.abs()
        excess = torch.where(torch.isnan(difference), torch.inf, difference - allowed)
        if excess.numel() and excess.max() > 0:
            worst = int(excess.flatten().argmax())
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), e.shape))
            where = f" (result {part})" if len(actual) > 1 else ""
            raise AssertionError(
                f"{prop}: the worst element{where} is at index {index}: got "
                f"{a64.flatten()[worst].item():.6g}, expected {e64.flatten()[worst].item():.6g} "
                f"(off by {difference.flatten()[worst].item():.3g}, allowed "
                f"{allowed.flatten()[worst].item():.3g} with rtol={tol['rtol']}, "
                f"atol={tol['atol']}); {int((excess > 0).sum())} of {excess.numel()} "
                "elements are out of tolerance."
            )


def _accepts(explainer, name):
    try:
        parameters = inspect.signature(explainer).parameters
    except (TypeError, ValueError):
        return True
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _args(inputs):
    return inputs if isinstance(inputs, tuple) else (inputs,)


def _output(model, inputs):
    """The model's output on ``inputs``, under no_grad, buffers untouched."""
    with torch.no_grad():
        return run(
            model,
            model_state(model, None) if isinstance(model, nn.Module) else {},
            tuple(x.detach() for x in _args(inputs)),
            "check",
        )[0]


def _score_of(target, output):
    """A callable ``out -> (B,)`` scoring ``target`` (any form) the way grad_cam does."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return target
    (selector,) = cotangent(output, target, output.shape[0], "check")
    return _Selected(selector)


class _Selected:
    """``(out * selector).sum()`` per example: an index target as a callable."""

    def __init__(self, selector):
        self.selector = selector

    def __call__(self, out):
        return (out * self.selector.to(out.dtype)).flatten(1).sum(1)

    def __repr__(self):
        return "score_of_target"


class _Combined:
    """``a * s1(out) + b * s2(out)``."""

    def __init__(self, a, s1, b, s2):
        self.a, self.s1, self.b, self.s2 = a, s1, b, s2

    def __call__(self, out):
        return self.a * self.s1(out) + self.b * self.s2(out)


def _other_target(output):
    """A second, different score: the last class minus the first."""
    last = output.shape[1] - 1

    def contrast(out):
        return out[:, last] - out[:, 0]

    return contrast


def check_batch_independence(
    explainer: Explainer,
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """``E(x)[i] == E(x[i:i+1])[0]``: each example's CAM is its own."""
    batch = _args(inputs)[0].shape[0]
    whole = explainer(model, layer, inputs, target)
    pieces = []
    for i in range(batch):
        one = tuple(x[i : i + 1] for x in _args(inputs))
        pieces.append(
            explainer(
                model,
                layer,
                one if isinstance(inputs, tuple) else one[0],
                _target_of_example(target, i),
            )
        )
    expected = tuple(torch.cat(parts) for parts in zip(*map(_parts, pieces), strict=True))
    assert_matches(
        "batch_independence", whole, expected if len(expected) > 1 else expected[0], tolerance
    )


def _target_of_example(target, i):
    if isinstance(target, list):
        return [target[i]]
    if isinstance(target, torch.Tensor) and target.ndim == 1 and target.numel() > 1:
        return target[i : i + 1]
    return target


def check_target_stacking(
    explainer: Explainer,
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """``E(targets=[t1, ..., tK])[k] == E(target=tk)``, here for K = 3."""
    output = _output(model, inputs)
    targets = [target, 0, _other_target(output)]
    stacked = explainer(model, layer, inputs, targets=targets)
    loop = [explainer(model, layer, inputs, t) for t in targets]
    expected = tuple(torch.stack(parts) for parts in zip(*map(_parts, loop), strict=True))
    assert_matches(
        "target_stacking", stacked, expected if len(expected) > 1 else expected[0], tolerance
    )


def check_target_linearity(
    explainer: Explainer,
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """``E(a s1 + b s2) == a E(s1) + b E(s2)``, a = 1.7, b = -0.6."""
    output = _output(model, inputs)
    s1, s2 = _score_of(target, output), _other_target(output)
    combined = explainer(model, layer, inputs, _Combined(1.7, s1, -0.6, s2))
    first, second = explainer(model, layer, inputs, s1), explainer(model, layer, inputs, s2)
    expected = tuple(1.7 * a - 0.6 * b for a, b in zip(_parts(first), _parts(second), strict=True))
    assert_matches(
        "target_linearity", combined, expected if len(expected) > 1 else expected[0], tolerance
    )


def check_scale_equivariance(
    explainer: Explainer,
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """``E(a s, relu=True) == a E(s, relu=True)`` for a = 2.5 > 0."""
    output = _output(model, inputs)
    score = _score_of(target, output)
    options = dict(relu=True) if _accepts(explainer, "relu") else {}
    scaled = explainer(model, layer, inputs, _Combined(2.5, score, 0.0, score), **options)
    plain = explainer(model, layer, inputs, score, **options)
    expected = tuple(2.5 * p for p in _parts(plain))
    assert_matches(
        "scale_equivariance", scaled, expected if len(expected) > 1 else expected[0], tolerance
    )


class _ChannelsPermuted(nn.Module):
    """The layer with its output channels permuted (``permuted``) and put back right
    after, so the model computes what it did, with the channels in another order at
    the explained module."""

    class _Permuted(nn.Module):
        def __init__(self, inner, order):
            super().__init__()
            self.inner, self.order = inner, order

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)[:, self.order]

    def __init__(self, inner, order):
        super().__init__()
        self.permuted = self._Permuted(inner, order)
        self.inverse = torch.argsort(order)

    def forward(self, *args, **kwargs):
        return self.permuted(*args, **kwargs)[:, self.inverse]


def _layer_name(model, layer):
    if isinstance(layer, str):
        return layer
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise AssertionError("channel_permutation: the layer is not a submodule of the model.")


def check_channel_permutation(
    explainer: Explainer,
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """The CAM is unchanged when the layer's channels come in another order (a copy of
    the model whose layer permutes its output channels and undoes it right after)."""
    name = _layer_name(model, layer)
    original = explainer(model, layer, inputs, target)
    channels = model.get_submodule(name)
    with torch.no_grad():
        width = _activation_width(model, name, inputs)
    order = torch.arange(width).flip(0).roll(1)  # no channel stays in place (width > 2)
    twin = copy.deepcopy(model)
    parent_name, _, attribute = name.rpartition(".")
    parent = twin.get_submodule(parent_name) if parent_name else twin
    setattr(parent, attribute, _ChannelsPermuted(twin.get_submodule(name), order))
    del channels
    permuted = explainer(twin, f"{name}.permuted", inputs, target)
    assert_matches("channel_permutation", permuted, original, tolerance)


def _activation_width(model, name, inputs):
    seen = []
    handle = model.get_submodule(name).register_forward_hook(
        lambda _, __, out: seen.append(out.shape[1])
    )
    try:
        _output(model, inputs)
    finally:
        handle.remove()
    return seen[0]


def check_relu_consistency(
    explainer: Explainer,
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """``E(relu=True) == max(E(relu=False), 0)``."""
    on = explainer(model, layer, inputs, target, relu=True)
    off = explainer(model, layer, inputs, target, relu=False)
    expected = tuple(p.clamp_min(0) for p in _parts(off))
    assert_matches(
        "relu_consistency", on, expected if len(expected) > 1 else expected[0], tolerance
    )


def check_channel_sum(
    explainer: Explainer,
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """``E(sum_channels=False).sum(1, keepdim=True) == E(sum_channels=True)``."""
    per_channel = explainer(model, layer, inputs, target, sum_channels=False)
    summed = explainer(model, layer, inputs, target, sum_channels=True)
    expected = tuple(p.sum(1, keepdim=True) for p in _parts(per_channel))
    assert_matches("channel_sum", summed, expected if len(expected) > 1 else expected[0], tolerance)


class _Planted(Exception):
    """Raised inside the model by check_no_side_effects."""


def _state_of(model, inputs):
    return (
        {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        {k: v.requires_grad for k, v in model.named_parameters()},
        [
            (
                name,
                m.training,
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(getattr(m, "_backward_pre_hooks", {})),
            )
            for name, m in model.named_modules()
        ],
        [(x.detach().clone(), x.requires_grad) for x in _args(inputs)],
    )


def _compare_state(when, model, inputs, before):
    state, grads, modules, saved_inputs = before
    after = _state_of(model, inputs)
    for name, value in after[0].items():
        if name not in state or not torch.equal(value, state[name]):
            raise AssertionError(f"no_side_effects: {when}, the model's {name!r} changed.")
    if after[1] != grads:
        raise AssertionError(f"no_side_effects: {when}, requires_grad of a parameter changed.")
    for (name, *flags), (_, *old) in zip(after[2], modules, strict=True):
        if flags != old:
            what = "training flag" if flags[0] != old[0] else "hooks"
            module = f"module {name!r}" if name else "the model"
            raise AssertionError(
                f"no_side_effects: {when}, the {what} of {module} changed: "
                f"{old} -> {flags} (training, forward, pre-forward, "
                "backward, pre-backward hooks)."
            )
    for i, ((x, requires), (now, now_requires)) in enumerate(
        zip(saved_inputs, after[3], strict=True)
    ):
        if not torch.equal(x, now) or requires != now_requires:
            raise AssertionError(f"no_side_effects: {when}, inputs[{i}] changed.")


def check_no_side_effects(
    explainer: Explainer,
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """Parameters, buffers, hooks, inputs and training flags stay as they were, after a
    call and after a call in which the model raises (from a hook planted on the layer)."""
    before = _state_of(model, inputs)
    explainer(model, layer, inputs, target)
    _compare_state("after a call", model, inputs, before)

    module = model.get_submodule(layer) if isinstance(layer, str) else layer

    def explode(*_):
        raise _Planted("raised inside the model by check_no_side_effects")

    handle = module.register_forward_hook(explode)
    raised = False
    try:
        explainer(model, layer, inputs, target)
    except Exception:  # noqa: BLE001 - any error the explainer chooses to raise
        raised = True
    finally:
        handle.remove()
    if not raised:
        raise AssertionError(
            "no_side_effects: the model raised inside the call, and the "
            "explainer returned a result instead of raising."
        )
    _compare_state("after a call in which the model raised", model, inputs, before)


def check_differentiable(
    explainer: Explainer,
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """In float64, ``torch.func.grad`` of ``sum(E * w)`` with respect to ``params`` and
    the inputs matches central finite differences along a random direction."""
    tolerance = tolerance or dict(rtol=FINITE_DIFFERENCES["rtol"], atol=FINITE_DIFFERENCES["atol"])
    twin = copy.deepcopy(model).double()
    xs = tuple(x.detach().double() for x in _args(inputs))
    name = _layer_name(model, layer)
    params = {k: v.detach() for k, v in twin.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    weights = None

    def loss(p, *values):
        nonlocal weights
        cam = explainer(
            twin, name, values if isinstance(inputs, tuple) else values[0], target, params=p
        )
        parts = _parts(cam)
        if weights is None:
            weights = [torch.randn(c.shape, generator=generator, dtype=c.dtype) for c in parts]
        return sum((c * w).sum() for c, w in zip(parts, weights, strict=True))

    grads = torch.func.grad(loss, argnums=tuple(range(len(xs) + 1)))(params, *xs)
    directions: list[Any] = [
        {k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in params.items()}
    ]
    directions += [torch.randn(x.shape, generator=generator, dtype=x.dtype) for x in xs]
    analytic = sum((grads[0][k] * directions[0][k]).sum() for k in params)
    analytic = analytic + sum((g * d).sum() for g, d in zip(grads[1:], directions[1:], strict=True))
    step = FINITE_DIFFERENCES["step"]

    def along(t):
        p = {k: v + t * directions[0][k] for k, v in params.items()}
        return loss(p, *(x + t * d for x, d in zip(xs, directions[1:], strict=True)))

    with torch.no_grad():
        numeric = (along(step) - along(-step)) / (2 * step)
    assert_matches("differentiable (directional derivative)", analytic, numeric, tolerance)


PROPERTIES = {
    "batch_independence": check_batch_independence,
    "target_stacking": check_target_stacking,
    "target_linearity": check_target_linearity,
    "scale_equivariance": check_scale_equivariance,
    "channel_permutation": check_channel_permutation,
    "relu_consistency": check_relu_consistency,
    "channel_sum": check_channel_sum,
    "no_side_effects": check_no_side_effects,
    "differentiable": check_differentiable,
}

# What each keyword an explainer accepts makes checkable.
_NEEDS = {
    "target_stacking": "targets",
    "relu_consistency": "relu",
    "channel_sum": "sum_channels",
    "differentiable": "params",
}


def properties_of(explainer: Explainer) -> list[str]:
    """The names of the properties ``explainer`` should have.

    An explainer may say so itself with a ``properties`` attribute (a collection of
    names). For ``grad_cam`` and ``functools.partial(cam, method=...)`` the method's
    entry in ``gradcam_func.methods.METHODS`` says. Otherwise: every property whose
    keyword the explainer accepts (targets, relu, sum_channels, params).
    """
    from ..methods import METHODS

    declared = getattr(explainer, "properties", None)
    method = _method_of(explainer)
    if declared is None and method is not None:
        declared = METHODS[method].properties
    names = [name for name in PROPERTIES if name not in _NEEDS or _accepts(explainer, _NEEDS[name])]
    return [name for name in names if declared is None or name in declared]


def _method_of(explainer):
    """ "gradcam" for grad_cam, the method of a ``partial(cam, method=...)``, else None."""
    from .._cam import cam
    from .._grad_cam import grad_cam

    if explainer is grad_cam:
        return "gradcam"
    if isinstance(explainer, functools.partial) and explainer.func is cam:
        return explainer.keywords.get("method", "gradcam")
    return None


def check_all(
    explainer: Explainer,
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    skip: Sequence[str] = (),
    tolerance: Mapping[str, float] | None = None,
) -> list[str]:
    """Run every property that applies to ``explainer`` (``properties_of``), except
    those named in ``skip``; raise the first AssertionError. Returns the names checked.
    """
    checked = []
    for name in properties_of(explainer):
        if name in skip:
            continue
        PROPERTIES[name](explainer, model, layer, inputs, target, tolerance=tolerance)
        checked.append(name)
    return checked
