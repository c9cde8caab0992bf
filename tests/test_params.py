"""params=: grad_cam as a pure function of (params, inputs), the module untouched."""

import copy

import pytest
import torch
from torch import nn

import gradcam_func as gf
from conftest import assert_close
from zoo import residual


def perturbed(model, scale=0.3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {
        name: value + scale * torch.randn(value.shape, generator=generator, dtype=value.dtype)
        for name, value in model.named_parameters()
    }


def state_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("targets", [None, [0, 2]])
def test_perturbed_params_equal_loading_them(targets):
    case = residual(torch.float64)
    before = state_of(case.model)
    params = perturbed(case.model)
    loaded = copy.deepcopy(case.model)
    loaded.load_state_dict({**loaded.state_dict(), **params})
    target = None if targets else 1
    ours = gf.grad_cam(case.model, "bn", case.inputs[0], target, targets=targets, params=params)
    assert_close(ours, gf.grad_cam(loaded, "bn", case.inputs[0], target, targets=targets))
    for name, value in case.model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_buffers_can_be_passed_too():
    case = residual(torch.float64)
    buffers = {
        "bn.running_mean": torch.full((8,), 0.3, dtype=torch.float64),
        "bn.running_var": torch.full((8,), 2.0, dtype=torch.float64),
    }
    loaded = copy.deepcopy(case.model)
    loaded.load_state_dict({**loaded.state_dict(), **buffers})
    assert_close(
        gf.grad_cam(case.model, "bn", case.inputs[0], 1, params=buffers),
        gf.grad_cam(loaded, "bn", case.inputs[0], 1),
    )


def test_train_mode_with_params_leaves_the_module_untouched():
    case = residual(torch.float64)
    case.model.train()
    before = state_of(case.model)
    gf.grad_cam(case.model, "bn", case.inputs[0], 1, params=perturbed(case.model))
    for name, value in case.model.state_dict().items():
        assert torch.equal(value, before[name]), name


class Tied(nn.Module):
    """An encoder and a decoder that share one weight matrix."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(6, 4, bias=False)
        self.decoder = nn.Linear(4, 6, bias=False)
        self.decoder.weight = self.encoder.weight  # shared (transposed use below)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        hidden = torch.tanh(self.encoder(x))
        return self.head(torch.tanh(hidden @ self.decoder.weight))


def test_tied_weights_change_together_as_loading_would():
    torch.manual_seed(0)
    model = Tied().double()
    x = torch.randn(5, 6, dtype=torch.float64)
    new_weight = torch.randn(4, 6, dtype=torch.float64)
    loaded = copy.deepcopy(model)
    with torch.no_grad():
        loaded.encoder.weight.copy_(new_weight)  # one tensor: both uses change
    ours = gf.grad_cam(model, "encoder", x, 2, params={"encoder.weight": new_weight})
    assert_close(ours, gf.grad_cam(loaded, "encoder", x, 2))
    assert not torch.equal(ours, gf.grad_cam(model, "encoder", x, 2))
