"""Gradients of CAMs (second order through the layer's VJP) against finite differences."""

import pytest
import torch
from torch import nn

import gradcam_func as gf
from conftest import FINITE_DIFFERENCES, assert_not_zero


def smooth_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.Softplus(),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 3, 1),
        nn.Softplus(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 3),
    ).double()


def relu_model():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 16, 3),
    ).double()


def loss_of(model, layer, x, params, target):
    cams = gf.grad_cam(model, layer, x, targets=[target, 0], params=params)
    return (cams[0] ** 2).sum() + (cams[1] * x[:, :1]).sum()


def central_difference(f, value, direction, eps=1e-6):
    return (f(value + eps * direction) - f(value - eps * direction)) / (2 * eps)


@pytest.mark.parametrize("make", [smooth_model, relu_model])
def test_gradient_wrt_inputs(make):
    model = make()
    params = dict(model.named_parameters())
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    direction = torch.randn_like(x)
    grad = torch.func.grad(lambda x: loss_of(model, "2", x, params, 2))(x)
    numeric = central_difference(lambda x: loss_of(model, "2", x, params, 2), x, direction)
    torch.testing.assert_close((grad * direction).sum(), numeric, **FINITE_DIFFERENCES)


@pytest.mark.parametrize("make", [smooth_model, relu_model])
def test_gradient_wrt_params(make):
    model = make()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    direction = {
        k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in params.items()
    }
    grads = torch.func.grad(lambda p: loss_of(model, "2", x, p, 1))(params)
    analytic = sum((grads[k] * direction[k]).sum() for k in params)

    def along(t):
        return loss_of(model, "2", x, {k: params[k] + t * direction[k] for k in params}, 1)

    numeric = (along(1e-6) - along(-1e-6)) / 2e-6
    torch.testing.assert_close(analytic, numeric, **FINITE_DIFFERENCES)
    # the head's parameters enter only through the layer's VJP: second order matters
    head_weight = list(params)[-2]  # the final Linear's weight
    assert grads[head_weight].abs().sum() > 0


def test_jacrev_wrt_inputs_matches_finite_differences():
    model = smooth_model()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    f = lambda x: gf.grad_cam(model, "2", x, 1).flatten()
    jacobian = torch.func.jacrev(f)(x).reshape(9, -1)
    for column in range(0, x.numel(), 5):
        direction = torch.zeros(x.numel(), dtype=torch.float64)
        direction[column] = 1
        numeric = central_difference(f, x, direction.reshape(x.shape))
        torch.testing.assert_close(jacobian[:, column], numeric, **FINITE_DIFFERENCES)


def test_gradcheck_through_multi_target_and_top_k_classes():
    model = smooth_model()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def cams(weight):
        p = {**params, "4.weight": weight}
        return gf.grad_cam(model, "2", x, targets=[0, lambda o: o.softmax(1)[:, 2]], params=p)

    weight = params["4.weight"].clone()
    jac = torch.func.jacrev(cams)(weight)
    direction = torch.randn_like(weight)
    numeric = central_difference(cams, weight, direction)
    torch.testing.assert_close(
        (jac * direction).sum(dim=tuple(range(-4, 0))), numeric, **FINITE_DIFFERENCES
    )


class Attention(nn.Module):
    """The layer, then self-attention: the CAM's gradient at the layer runs back through
    attention, so differentiating the CAM needs attention's second derivative. float32,
    where CPU's scaled_dot_product_attention takes its flash kernel, which has none."""

    def __init__(self, by_hand):
        super().__init__()
        torch.manual_seed(0)
        self.layer, self.qkv, self.fc = nn.Linear(8, 8), nn.Linear(8, 24), nn.Linear(8, 3)
        self.by_hand = by_hand

    def forward(self, x):  # (B, T, 8)
        h = torch.tanh(self.layer(x))
        q, k, v = self.qkv(h).view(*h.shape[:2], 3, 2, 4).permute(2, 0, 3, 1, 4)
        if self.by_hand:
            a = ((q @ k.transpose(-1, -2)) / 2.0).softmax(-1) @ v
        else:
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.fc(a.transpose(1, 2).flatten(2).mean(1))


def test_a_cam_through_scaled_dot_product_attention_is_differentiable():
    """torch.func.grad of a CAM loss equals the same model's with attention written out."""
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))

    def grad_of(model):  # the CAMs are ~1e-2 here: the loss is scaled to gradients ~1
        return torch.func.grad(lambda x: 1e4 * (gf.grad_cam(model, "layer", x, 1) ** 2).sum())(x)

    expected = grad_of(Attention(by_hand=True))
    assert_not_zero(expected)
    torch.testing.assert_close(grad_of(Attention(by_hand=False)), expected, rtol=1e-4, atol=1e-5)
