"""Each property check fails on an explainer broken for that property, and says how."""

import pytest
import torch

import gradcam_func as gf
from gradcam_func.testing import families
from gradcam_func.testing import properties as gp


@pytest.fixture
def problem():
    case = families.plain_cnn(seed=3, width=3, size=5, classes=4)
    x = case.inputs(3, torch.Generator().manual_seed(0))
    return case.model, "conv2", x, 1


def by_hand(
    model,
    layer,
    inputs,
    target=None,
    *,
    targets=None,
    relu=False,
    sum_channels=True,
    params=None,
    weigh=None,
):
    """Grad-CAM from layer_vjp, with ``weigh(grads) -> weights`` replaceable."""
    output, acts, pullback = gf.layer_vjp(model, layer, inputs, params=params)
    chosen = [target] if targets is None else targets
    cams = []
    for t in chosen:
        (cot,) = gf._targets.cotangent(output, t, output.shape[0])
        grads = pullback(cot)
        weights = weigh(grads) if weigh else grads.mean((2, 3), keepdim=True)
        cam = weights * acts
        cam = cam.sum(1, keepdim=True) if sum_channels else cam
        cams.append(cam.clamp_min(0) if relu else cam)
    return cams[0] if targets is None else torch.stack(cams)


def test_the_reference_explainer_passes_them_all(problem):
    assert gp.check_all(by_hand, *problem, skip=("target_stacking",)) == [
        "batch_independence",
        "target_linearity",
        "scale_equivariance",
        "channel_permutation",
        "relu_consistency",
        "channel_sum",
        "no_side_effects",
        "differentiable",
    ]


def batch_normalized(*args, **kwargs):
    cam = by_hand(*args, **kwargs)
    return cam / cam.abs().max()  # over the whole batch: examples see each other


def reversed_stack(*args, targets=None, **kwargs):
    cams = by_hand(*args, targets=targets, **kwargs)
    return cams.flip(0) if targets is not None else cams


def squared_weights(*args, **kwargs):
    return by_hand(*args, weigh=lambda g: g.mean((2, 3), keepdim=True) ** 2, **kwargs)


def normalized(*args, **kwargs):
    return gf.normalize(by_hand(*args, **kwargs))  # scale-invariant, not equivariant


def weighted_by_index(*args, **kwargs):
    def weigh(g):
        index = torch.arange(1, g.shape[1] + 1, dtype=g.dtype).view(1, -1, 1, 1)
        return g.mean((2, 3), keepdim=True) * index

    return by_hand(*args, weigh=weigh, **kwargs)


def abs_for_relu(*args, relu=False, **kwargs):
    cam = by_hand(*args, **kwargs)
    return cam.abs() if relu else cam


def unweighted_channels(*args, sum_channels=True, **kwargs):
    if sum_channels:
        return by_hand(*args, **kwargs)
    model, layer, inputs = args[:3]
    return gf.layer_vjp(model, layer, inputs)[1]


def switches_to_train(model, *args, **kwargs):
    model.train()
    return by_hand(model, *args, **kwargs)


def leaves_a_hook(model, layer, *args, **kwargs):
    model.get_submodule(layer).register_forward_hook(lambda *_: None)
    return by_hand(model, layer, *args, **kwargs)


def scales_the_input(model, layer, inputs, *args, **kwargs):
    inputs.mul_(1.0001)
    return by_hand(model, layer, inputs, *args, **kwargs)


def swallows_errors(*args, **kwargs):
    try:
        return by_hand(*args, **kwargs)
    except Exception:  # noqa: BLE001
        return torch.zeros(1)


def detached_weights(*args, **kwargs):
    return by_hand(*args, weigh=lambda g: g.mean((2, 3), keepdim=True).detach(), **kwargs)


@pytest.mark.parametrize(
    "check, broken, fragment",
    [
        (
            gp.check_batch_independence,
            batch_normalized,
            r"^batch_independence: the worst "
            r"element is at index \(\d+, 0, \d+, \d+\): got .*, expected .* \(off by .*, allowed "
            r".* with rtol=1e-07, atol=1e-09\); \d+ of 75 elements are out of tolerance\.$",
        ),
        (gp.check_target_stacking, reversed_stack, r"^target_stacking: the worst element"),
        (gp.check_target_linearity, squared_weights, r"^target_linearity: the worst element"),
        (gp.check_scale_equivariance, normalized, r"^scale_equivariance: the worst element"),
        (gp.check_channel_permutation, weighted_by_index, r"^channel_permutation: the worst"),
        (gp.check_relu_consistency, abs_for_relu, r"^relu_consistency: the worst element"),
        (gp.check_channel_sum, unweighted_channels, r"^channel_sum: the worst element"),
        (
            gp.check_no_side_effects,
            switches_to_train,
            r"after a call, the training flag of the model changed: \[False, 0, 0, 0, 0\] -> "
            r"\[True, 0, 0, 0, 0\]",
        ),
        (
            gp.check_no_side_effects,
            leaves_a_hook,
            r"the hooks of module 'conv2' changed: \[False, 0, 0, 0, 0\] -> "
            r"\[False, 1, 0, 0, 0\]",
        ),
        (gp.check_no_side_effects, scales_the_input, r"after a call, inputs\[0\] changed"),
        (
            gp.check_no_side_effects,
            swallows_errors,
            r"the explainer returned a result instead "
            r"of raising",
        ),
        (
            gp.check_differentiable,
            detached_weights,
            r"^differentiable \(directional "
            r"derivative\): the worst element",
        ),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_each_check_catches_its_broken_explainer(problem, check, broken, fragment):
    model, layer, x, target = problem
    check(by_hand, model, layer, x.clone(), target)  # the unbroken explainer passes
    with pytest.raises(AssertionError, match=fragment):
        check(broken, model, layer, x.clone(), target)


def test_tolerances_can_be_overridden(problem):
    model, layer, x, target = problem
    gp.check_batch_independence(
        batch_normalized, model, layer, x, target, tolerance=dict(rtol=10.0, atol=10.0)
    )


def test_an_explainer_declares_its_properties():
    def mine(model, layer, inputs, target=None):
        return by_hand(model, layer, inputs, target)

    mine.properties = ("batch_independence", "no_side_effects")
    assert gp.properties_of(mine) == ["batch_independence", "no_side_effects"]
    assert "target_linearity" not in gp.properties_of(
        __import__("functools").partial(gf.cam, method="gradcam++")
    )
