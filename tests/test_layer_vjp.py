"""layer_vjp: the pullback is the gradient at the layer, and the forward runs once."""

from collections import UserList

import pytest
import torch
from torch import nn

import gradcam_func as gf
from conftest import FINITE_DIFFERENCES, assert_close
from test_methods_gradient import Scaled
from zoo import ZOO


class Counter(nn.Module):
    """Identity that counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def counted_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        Counter(),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.Softplus(),
        Counter(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    ).double()
    return model, model[2], model[5]


def test_pullback_equals_autograd_at_the_layer():
    model, _, _ = counted_model()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    output, act, pullback = gf.layer_vjp(model, model[3], x)
    leaf = model[:4](x).detach().requires_grad_()
    expected_output = model[4:](leaf)
    cotangent = torch.randn_like(expected_output)
    (expected,) = torch.autograd.grad(expected_output, leaf, cotangent)
    assert_close(output, expected_output.detach())
    assert_close(act, leaf.detach())
    assert_close(pullback(cotangent), expected)


def test_pullback_matches_finite_differences():
    model, _, _ = counted_model()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    _, act, pullback = gf.layer_vjp(model, model[3], x)
    head = model[4:]
    direction = torch.randn_like(act)
    cotangent = torch.randn(2, 3, dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        numeric = (
            (head(act + eps * direction) - head(act - eps * direction)) / (2 * eps) * cotangent
        ).sum()
    analytic = (pullback(cotangent) * direction).sum()
    torch.testing.assert_close(analytic, numeric, **FINITE_DIFFERENCES)


def test_pullback_under_vmap_equals_a_loop():
    model, _, _ = counted_model()
    x = torch.randn(3, 3, 5, 5, dtype=torch.float64)
    _, _, pullback = gf.layer_vjp(model, model[3], x)
    cotangents = torch.randn(4, 3, 3, dtype=torch.float64)
    assert_close(
        torch.func.vmap(pullback)(cotangents), torch.stack([pullback(c) for c in cotangents])
    )


def test_tuple_activation_gives_tuple_gradients():
    case = ZOO["tuple_output"](torch.float64)
    output, acts, pullback = gf.layer_vjp(case.model, case.layer, case.inputs[0])
    grads = pullback(torch.ones_like(output))
    assert isinstance(acts, tuple) and isinstance(grads, tuple)
    assert [a.shape for a in acts] == [g.shape for g in grads]


def test_attribute_to_layer_input_is_the_layer_input():
    model, _, _ = counted_model()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    _, act, _ = gf.layer_vjp(model, model[3], x, attribute_to_layer_input=True)
    assert_close(act, model[:3](x).detach())


def test_one_forward_per_call_and_no_probe_once_cached():
    model, before, after = counted_model()
    for shape in [(2, 3, 5, 5), (2, 3, 7, 7)]:  # each shape is new to the cache
        x = torch.randn(*shape, dtype=torch.float64)
        before.calls = after.calls = 0
        gf.layer_vjp(model, model[3], x)
        # The first call probes the activation's shape, stopping at the layer: the
        # trunk may run for the probe, the part after the layer runs once.
        assert after.calls == 1 and before.calls <= 2
        before.calls = after.calls = 0
        output, _, pullback = gf.layer_vjp(model, model[3], x)
        pullback(torch.ones_like(output))
        pullback(torch.ones_like(output))
        assert before.calls == 1 and after.calls == 1


def test_multi_target_runs_the_forward_once():
    model, before, after = counted_model()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    gf.grad_cam(model, model[3], x, 0)
    before.calls = after.calls = 0
    gf.grad_cam(model, model[3], x, targets=[0, 1, 2, (1,), [0, 2]])
    assert before.calls == 1 and after.calls == 1


def test_a_stale_cached_shape_is_corrected():
    """A callable model whose layer shape changes with a non-tensor setting it hides."""
    model, _, _ = counted_model()
    crop = {"size": 5}
    fn = lambda x: model(x[..., : crop["size"], : crop["size"]])
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    first = gf.grad_cam(fn, model[3], x, 1)
    crop["size"] = 6  # same input signature, different activation shape
    second = gf.grad_cam(fn, model[3], x, 1)
    assert first.shape[-1] == 5 and second.shape[-1] == 6
    assert_close(second, gf.grad_cam(model, model[3], x[..., :6, :6], 1))


def test_extra_arguments_that_compare_equal_keep_specs_of_their_own():
    """``True == 1``, two lists are unhashable, and a list and a ``UserList`` print
    alike: each extra argument still gets its own cached spec, so once all are cached
    every call runs the forward once."""

    class Keep(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.act, self.runs = nn.Linear(4, 4), nn.Tanh(), 0

        def forward(self, x, keep):
            self.runs += 1
            h = self.layer(x)
            if isinstance(keep, UserList):  # read otherwise than the list it prints as
                h = h[:, : len(keep) + 1]
            else:
                h = h if keep is True else h[:, keep] if isinstance(keep, list) else h[:, :keep]
            h = self.act(h)
            return torch.stack([h.sum(1), (h * h).mean(1)], 1)

    torch.manual_seed(0)
    model, x = Keep().double(), torch.randn(3, 4, dtype=torch.float64)
    keeps = [True, 1, [0, 2], [0, 1, 3], UserList([0, 2])]
    for keep in keeps:  # probes each one, then runs it
        gf.grad_cam(model, "act", x, 1, additional_forward_args=(keep,))
    model.runs = 0
    for keep, size in zip(keeps, [4, 1, 2, 3, 3], strict=True):
        cams = gf.grad_cam(model, "act", x, 1, additional_forward_args=(keep,), sum_channels=False)
        assert cams.shape == (3, size)
    assert model.runs == len(keeps)


def test_params_and_additional_forward_args_reach_the_forward():
    """With other weights and an extra argument, everything equals autograd by hand on
    a copy of the model that holds those weights, called with that argument."""
    model = Scaled().double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    scale = torch.tensor(-2.5, dtype=torch.float64)
    params = {name: 1.5 * p.detach() + 0.1 for name, p in model.named_parameters()}
    before = {name: t.clone() for name, t in model.state_dict().items()}
    output, act, pullback = gf.layer_vjp(
        model, "conv", x, additional_forward_args=(scale,), params=params
    )

    copy = Scaled().double()
    copy.load_state_dict(params)
    leaf = copy.conv(x).detach().requires_grad_()
    expected_output = copy.head((torch.tanh(leaf) * scale).mean((2, 3)))
    cotangent = torch.randn_like(expected_output)
    (expected,) = torch.autograd.grad(expected_output, leaf, cotangent)
    assert not torch.allclose(expected_output, model(x, scale))  # the weights matter
    assert_close(output, expected_output.detach())
    assert_close(act, leaf.detach())
    assert_close(pullback(cotangent), expected)
    for name, t in model.state_dict().items():  # the model keeps its own weights
        assert torch.equal(t, before[name])


def test_errors_name_layer_vjp():
    model = Scaled().double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with pytest.raises(gf.GradCamError, match=r"^layer_vjp\(\.\.\., params=.*did you mean"):
        gf.layer_vjp(model, "conv", x, additional_forward_args=(1.0,), params={"conv.weigth": 0})
    _, _, pullback = gf.layer_vjp(model, "conv", x, additional_forward_args=(1.0,))
    with pytest.raises(gf.GradCamError, match=r"^layer_vjp\("):
        pullback("not a tensor")
