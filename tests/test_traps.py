"""The known traps: in-place ReLU, state left behind, hooks, graphs kept alive, randomness."""

import gc
import weakref

import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

import gradcam_func as gf
from conftest import assert_close, assert_unchanged, hooks_of, snapshot
from zoo import Residual, residual


@pytest.mark.parametrize("attribute_to_layer_input", [False, True])
@pytest.mark.parametrize("layer", ["bn", "conv", "stem"])
def test_inplace_relu_after_the_layer_changes_nothing(layer, attribute_to_layer_input):
    torch.manual_seed(0)
    inplace = Residual(inplace=True).double().eval()
    copy = Residual(inplace=False).double().eval()
    copy.load_state_dict(inplace.state_dict())
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    kwargs = dict(targets=[0, 3], attribute_to_layer_input=attribute_to_layer_input)
    assert_close(gf.grad_cam(inplace, layer, x, **kwargs), gf.grad_cam(copy, layer, x, **kwargs))


@pytest.mark.parametrize("train", [False, True])
def test_parameters_buffers_and_inputs_are_untouched(train):
    case = residual(torch.float64)
    case.model.train(train)
    x = case.inputs[0]
    saved = snapshot(case.model, case.inputs)
    if train:  # a train-mode call updates running stats exactly as one forward does
        reference = Residual().double()
        reference.load_state_dict(case.model.state_dict())
        reference.train()(x)
    gf.grad_cam(case.model, case.model.bn, x, targets=[0, 1])
    gf.grad_cam(case.model.eval(), case.model.bn, x.double(), 1)  # eval: no update at all
    if train:
        for name, value in reference.state_dict().items():
            assert torch.equal(case.model.state_dict()[name], value), name
        saved[0].update({k: v for k, v in reference.state_dict().items()})
    assert_unchanged(case.model, case.inputs, saved)


def test_train_mode_batchnorm_matches_captum():
    case = residual(torch.float64)
    twin = residual(torch.float64)
    case.model.train()
    twin.model.train()
    ours = gf.grad_cam(case.model, case.model.conv, case.inputs[0], 1)
    theirs = LayerGradCam(twin.model, twin.model.conv).attribute(case.inputs[0], 1).detach()
    assert_close(ours, theirs)
    for name, value in twin.model.state_dict().items():  # one running-stat update each
        assert torch.equal(case.model.state_dict()[name], value), name


def test_no_hook_left_after_a_call_or_after_an_exception():
    case = residual(torch.float64)
    before = hooks_of(case.model)
    gf.grad_cam(case.model, "bn", case.inputs[0], targets=[0, 1])
    gf.layer_vjp(case.model, "bn", case.inputs[0], attribute_to_layer_input=True)
    assert hooks_of(case.model) == before

    class Boom(RuntimeError):
        pass

    def explode(*_):
        raise Boom("inside the forward")

    handle = case.model.head.register_forward_pre_hook(explode)
    saved = snapshot(case.model, case.inputs)
    with pytest.raises(Boom):
        gf.grad_cam(case.model, "bn", case.inputs[0], 1)
    handle.remove()
    assert hooks_of(case.model) == before
    assert_unchanged(case.model, case.inputs, saved)


def test_a_users_own_hooks_survive():
    case = residual(torch.float64)
    seen = []
    case.model.bn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    gf.grad_cam(case.model, "bn", case.inputs[0], 1)
    assert len(case.model.bn._forward_hooks) == 1 and seen


def test_eager_result_holds_no_graph_and_frees_the_forward():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    store = []
    model[1].register_forward_hook(lambda m, i, o: store.append(weakref.ref(o)))
    cams = gf.grad_cam(model, model[2], x, targets=[0, 1, 2])
    cam = gf.grad_cam(model, model[2], x, 1)
    for result in (cams, cam):
        assert not result.requires_grad and result.grad_fn is None
    gc.collect()
    assert store and all(ref() is None for ref in store), "an intermediate outlived the call"


def test_differentiable_under_torch_func_grad():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3),
        nn.Softplus(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    dx = torch.func.grad(lambda x: gf.grad_cam(model, model[2], x, 1).pow(2).sum())(x)
    assert dx.abs().sum() > 0


def test_dropout_in_train_mode_runs_the_forward_once_like_captum():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    for attempt in range(2):  # the second call runs from the cache, the first probes
        torch.manual_seed(1)
        ours = gf.grad_cam(model, model[3], x, 2)
        torch.manual_seed(1)
        theirs = LayerGradCam(model, model[3]).attribute(x, 2).detach()
        assert_close(ours, theirs)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode, torch.enable_grad])
def test_the_users_grad_mode_does_not_change_the_result(context):
    case = residual(torch.float64)
    expected = gf.grad_cam(case.model, "bn", case.inputs[0], targets=[0, 2])
    with context():
        assert_close(gf.grad_cam(case.model, "bn", case.inputs[0], targets=[0, 2]), expected)
