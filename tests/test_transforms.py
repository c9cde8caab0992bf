"""grad_cam under the user's own transforms: vmap over models and inputs, torch.compile."""

import pytest
import torch
from torch import nn

import gradcam_func as gf
from conftest import assert_close


def make(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("targets", [None, [0, 3, lambda out: out[:, 1] - out[:, 2]]])
def test_vmap_over_an_ensemble_equals_a_loop(targets):
    models = [make(seed) for seed in range(3)]
    params, buffers = torch.func.stack_module_state(models)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    target = None if targets else 2

    def explain(p, b):
        return gf.grad_cam(models[0], "3", x, target, targets=targets, params={**p, **b})

    ensemble = torch.func.vmap(explain)(params, buffers)
    loop = torch.stack([gf.grad_cam(m, "3", x, target, targets=targets) for m in models])
    assert_close(ensemble, loop)


def test_vmap_over_inputs_equals_a_loop():
    model = make(0)
    x = torch.randn(4, 2, 3, 6, 6, dtype=torch.float64)  # 4 batches of 2
    mapped = torch.func.vmap(lambda xb: gf.grad_cam(model, "3", xb, targets=[0, 1]))(x)
    loop = torch.stack([gf.grad_cam(model, "3", xb, targets=[0, 1]) for xb in x])
    assert_close(mapped, loop)


def test_grad_of_an_ensemble_loss_under_vmap():
    models = [make(seed) for seed in range(2)]
    params, buffers = torch.func.stack_module_state(models)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)

    def loss(p, b):
        return gf.grad_cam(models[0], "3", x, 1, params={**p, **b}).pow(2).sum()

    per_model = torch.func.vmap(torch.func.grad(loss))(params, buffers)
    for i, m in enumerate(models):
        single = torch.func.grad(loss)(dict(m.named_parameters()), dict(m.named_buffers()))
        for name in single:
            assert_close(per_model[name][i], single[name])


def test_torch_compile_equals_eager():
    model = make(0).float()
    x = torch.randn(2, 3, 8, 8)
    explain = lambda x: gf.grad_cam(model, "3", x, targets=[0, 2], relu=True)
    compiled = torch.compile(explain)
    assert_close(compiled(x), explain(x))
    x2 = torch.randn(2, 3, 8, 8)
    assert_close(compiled(x2), explain(x2))
