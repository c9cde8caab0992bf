"""One CNN in torch and in JAX with the same weights gives the same CAMs (and Captum's)."""

import jax
import jax.numpy as jnp
import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

import gradcam_func as gf
import gradcam_func.jax as gj
from conftest import assert_arrays_close


def torch_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def jax_split(model):
    """The same network in jax.lax, weights copied through DLPack, split at conv 2."""
    w = {k: gj.to_jax(v) for k, v in model.state_dict().items()}

    def conv(x, name):
        y = jax.lax.conv_general_dilated(
            x, w[f"{name}.weight"], (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        return y + w[f"{name}.bias"][None, :, None, None]

    def trunk(x):
        return conv(jax.nn.relu(conv(x, "0")), "2")

    def head(a):
        return jax.nn.relu(a).mean((2, 3)) @ w["6.weight"].T + w["6.bias"]

    return trunk, head


@pytest.mark.parametrize("relu", [False, True])
def test_torch_and_jax_agree_and_equal_captum(relu):
    model = torch_cnn()
    x = torch.randn(3, 3, 8, 8)
    trunk, head = jax_split(model)
    targets = [0, 3, [1, 2, 0], lambda out: out[:, 1] - out[:, 2]]
    jax_targets = [0, 3, jnp.array([1, 2, 0]), lambda out: out[:, 1] - out[:, 2]]
    ours = gf.grad_cam(model, model[2], x, targets=targets, relu=relu)
    theirs = gj.grad_cam(trunk, head, gj.to_jax(x), targets=jax_targets, relu=relu)
    assert_arrays_close(theirs, ours, torch.float32)
    for k in range(3):
        captum = (
            LayerGradCam(model, model[2]).attribute(x, targets[k], relu_attributions=relu).detach()
        )
        assert_arrays_close(theirs[k], captum, torch.float32)
