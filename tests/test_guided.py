"""Guided backprop and Guided Grad-CAM equal Captum's, leave no hooks, stack targets."""

import pytest
import torch
from captum.attr import GuidedBackprop, GuidedGradCam
from torch import nn

import gradcam_func as gf
from conftest import assert_close
from zoo import Residual


def relu_cnn(inplace=False):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 16, 4),
    ).double()


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 64, 3)

    def forward(self, a, b):
        return self.fc(self.relu(self.a(a) + self.b(b)).flatten(1))


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_guided_grad_cam_equals_captum(inplace, mode):
    model = relu_cnn(inplace)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for target in (1, [0, 3]):
        ours = gf.guided_grad_cam(model, model[2], x, target, interpolate_mode=mode)
        theirs = GuidedGradCam(model, model[2]).attribute(x, target, interpolate_mode=mode)
        assert_close(ours, theirs.detach())
        assert_close(
            gf.guided_backprop(model, x, target),
            GuidedBackprop(model).attribute(x, target).detach(),
        )


def test_residual_model_and_two_inputs_equal_captum():
    torch.manual_seed(0)
    model = Residual().double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert_close(
        gf.guided_grad_cam(model, model.conv, x, 2),
        GuidedGradCam(model, model.conv).attribute(x, 2).detach(),
    )
    torch.manual_seed(1)
    two = TwoInputs().double()
    inputs = (
        torch.randn(2, 3, 8, 8, dtype=torch.float64),
        torch.randn(2, 1, 8, 8, dtype=torch.float64),
    )
    ours = gf.guided_grad_cam(two, two.a, inputs, 1)
    theirs = GuidedGradCam(two, two.a).attribute(inputs, 1)
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a, b.detach())


def test_targets_stack_the_single_calls():
    model = relu_cnn()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    targets = [0, [2, 1], lambda out: out[:, 3] - out[:, 0]]
    stacked = gf.guided_grad_cam(model, model[2], x, targets=targets)
    for k, t in enumerate(targets):
        assert_close(stacked[k], gf.guided_grad_cam(model, model[2], x, t))


def test_no_hook_left_even_when_the_model_raises():
    model = relu_cnn()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    gf.guided_grad_cam(model, model[2], x, 1)
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())

    def explode(*_):
        raise RuntimeError("boom")

    handle = model[6].register_forward_pre_hook(explode)
    with pytest.raises(gf.GradCamError, match='the model raised RuntimeError .*: "boom"') as info:
        gf.guided_backprop(model, x, 1)
    assert isinstance(info.value.__cause__, RuntimeError)
    handle.remove()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    # the ReLUs are plain again: ordinary gradients equal autograd's
    leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)
    _, _, pullback = gf.layer_vjp(model, model[0], x, attribute_to_layer_input=True)
    assert_close(pullback(torch.eye(4, dtype=torch.float64)[[1, 1]]), expected)
