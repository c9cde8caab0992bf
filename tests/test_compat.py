"""compat.LayerGradCam: the cases of Captum's own LayerGradCam tests, and parity with it.

The models below mirror the fixed-weight models of Captum's test helpers
(BasicModel_MultiLayer, BasicModel_ConvNet_One_Conv); the expected values are the ones
Captum's test suite asserts.
"""

import pytest
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from torch import nn

from conftest import assert_close, assert_matches
from gradcam_func import GradCamError
from gradcam_func.compat import LayerGradCam
from zoo import ZOO


class TwoReLUs(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, a, b):
        return self.relu1(a), self.relu2(b)


class MultiLayer(nn.Module):
    """3 -> identity -> 4 (ones, bias -10, 1, 1, 1) -> ReLU -> 2 (ones, bias -1, 1)."""

    def __init__(self, multi_input_module=False):
        super().__init__()
        self.multi_input_module = multi_input_module
        self.linear0 = _linear(torch.eye(3), torch.zeros(3))
        self.linear1 = _linear(torch.ones(4, 3), torch.tensor([-10.0, 1.0, 1.0, 1.0]))
        self.linear1_alt = _linear(torch.ones(4, 3), torch.tensor([-10.0, 1.0, 1.0, 1.0]))
        self.multi_relu = TwoReLUs()
        self.relu = nn.ReLU()
        self.linear2 = _linear(torch.ones(2, 4), torch.tensor([-1.0, 1.0]))

    def forward(self, x):
        hidden = self.linear1(self.linear0(x))
        if self.multi_input_module:
            a, b = self.multi_relu(hidden, self.linear1_alt(x))
            self.relu(hidden)  # called, but its output never reaches the result
            return self.linear2(a + b)
        return self.linear2(self.relu(hidden))


class OneConv(nn.Module):
    """1x4x4 -> conv 3x3 (ones, bias -50, -75) -> ReLU -> fc 8->4 (+1 x5, -1 x3) -> ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.relu1 = nn.ReLU()
        self.fc1 = _linear(torch.cat([torch.ones(4, 5), -torch.ones(4, 3)], 1), torch.zeros(4))
        self.relu2 = nn.ReLU()
        with torch.no_grad():
            self.conv1.weight.copy_(torch.ones(2, 1, 3, 3))
            self.conv1.bias.copy_(torch.tensor([-50.0, -75.0]))

    def forward(self, x, x2=None):
        if x2 is not None:
            x = x + x2
        return self.relu2(self.fc1(self.relu1(self.conv1(x)).view(-1, 8)))


def _linear(weight, bias):
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def grid():
    return torch.arange(16).view(1, 1, 4, 4).float()


def with_negative_pixel():
    x = grid()
    x[0, 0, 1, 1] = -4.0
    return x


def relu_of(x):
    expected = 0.5625 * x
    expected[0, 0, 1, 1] = 0.0
    return expected


def no_grad_one_conv():
    net = OneConv()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net


# (name, model factory, layer name, input, expected, attribute kwargs) from Captum's tests
CAPTUM_CASES = [
    (
        "simple_input_non_conv",
        MultiLayer,
        "linear0",
        torch.tensor([[0.0, 100.0, 0.0]]),
        [[400.0]],
        {},
    ),
    (
        "simple_multi_input_non_conv",
        lambda: MultiLayer(True),
        "multi_relu",
        torch.tensor([[0.0, 6.0, 0.0]]),
        ([[21.0]], [[21.0]]),
        {},
    ),
    ("simple_input_conv", OneConv, "conv1", grid(), [[[[11.25, 13.5], [20.25, 22.5]]]], {}),
    (
        "simple_input_conv_no_grad",
        no_grad_one_conv,
        "conv1",
        grid(),
        [[[[11.25, 13.5], [20.25, 22.5]]]],
        {},
    ),
    ("simple_input_conv_relu", OneConv, "relu1", grid(), [[[[0.0, 4.0], [28.0, 32.5]]]], {}),
    (
        "simple_input_conv_without_final_relu",
        OneConv,
        "conv1",
        with_negative_pixel(),
        0.5625 * with_negative_pixel(),
        dict(attribute_to_layer_input=True),
    ),
    (
        "simple_input_conv_fc_with_final_relu",
        OneConv,
        "conv1",
        with_negative_pixel(),
        relu_of(with_negative_pixel()),
        dict(attribute_to_layer_input=True, relu_attributions=True),
    ),
    (
        "simple_multi_input_conv",
        OneConv,
        "conv1",
        (grid(), torch.ones(1, 1, 4, 4)),
        [[[[14.5, 19.0], [32.5, 37.0]]]],
        {},
    ),
]


@pytest.mark.parametrize(
    "name, make, layer, inputs, expected, kwargs",
    CAPTUM_CASES,
    ids=[case[0] for case in CAPTUM_CASES],
)
def test_captums_own_cases(name, make, layer, inputs, expected, kwargs):
    net = make()
    explainer = LayerGradCam(net, getattr(net, layer))
    assert explainer.uses_input_marginal_effects is False
    result = explainer.attribute(inputs, target=0, **kwargs)
    if isinstance(expected, tuple):
        assert isinstance(result, tuple) and len(result) == len(expected)
        for part, values in zip(result, expected, strict=True):
            assert_close(part, torch.tensor(values))
    else:
        assert_close(result, torch.as_tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("name", ["plain_cnn", "residual", "two_inputs", "tuple_output"])
@pytest.mark.parametrize("relu, summed", [(False, True), (True, False)])
def test_same_results_as_captum(name, relu, summed):
    case = ZOO[name](torch.float64)
    inputs = case.inputs if len(case.inputs) > 1 else case.inputs[0]
    kwargs = dict(relu_attributions=relu, attr_dim_summation=summed)
    ours = LayerGradCam(case.model, case.layer).attribute(inputs, case.target, **kwargs)
    theirs = CaptumLayerGradCam(case.model, case.layer).attribute(inputs, case.target, **kwargs)
    for a, b in zip(
        ours if isinstance(ours, tuple) else (ours,),
        theirs if isinstance(theirs, tuple) else (theirs,),
        strict=True,
    ):
        assert_close(a, b.detach())


def test_interpolate_is_captums():
    cam = torch.randn(2, 1, 3, 3)
    assert_close(
        LayerGradCam.interpolate(cam, (9, 9), "bilinear"),
        CaptumLayerGradCam.interpolate(cam, (9, 9), "bilinear"),
    )
    assert_close(LayerGradCam.interpolate(cam, (6, 6)), CaptumLayerGradCam.interpolate(cam, (6, 6)))


def test_signature_matches_captum():
    import inspect

    ours = inspect.signature(LayerGradCam.attribute).parameters
    theirs = inspect.signature(CaptumLayerGradCam.attribute).parameters
    assert list(ours) == list(theirs)
    assert [p.default for p in ours.values()] == [p.default for p in theirs.values()]
    assert list(inspect.signature(LayerGradCam).parameters) == list(
        inspect.signature(CaptumLayerGradCam).parameters
    )


def test_an_unused_layer_gives_zeros_with_materialize_grads():
    """Captum's test_relu_gradcam_with_unused_layer, through the drop-in."""
    net = MultiLayer(multi_input_module=True)
    x = torch.tensor([[0.0, 6.0, 0.0]], requires_grad=True)
    result = LayerGradCam(net, net.relu).attribute(
        inputs=x, target=0, grad_kwargs={"materialize_grads": True}
    )
    assert len(result) == 1 and list(result[0].shape) == [1]
    assert result[0].sum().item() == 0


def test_create_graph_gives_a_result_autograd_differentiates_like_captums():
    """With respect to the inputs and to every weight."""
    case = ZOO["residual"](torch.float64)
    x = case.inputs[0].clone().requires_grad_()
    grad_kwargs = {"create_graph": True}
    ours = LayerGradCam(case.model, case.layer).attribute(x, 1, grad_kwargs=grad_kwargs)
    theirs = CaptumLayerGradCam(case.model, case.layer).attribute(x, 1, grad_kwargs=grad_kwargs)
    weights = list(case.model.parameters())  # the graph reaches the weights as Captum's does
    unused = dict(allow_unused=True, materialize_grads=True)  # the head's bias: zeros
    ours_grads = torch.autograd.grad((ours**2).sum(), [x, *weights], **unused)
    their_grads = torch.autograd.grad((theirs**2).sum(), [x, *weights], **unused)
    assert_matches(ours_grads[:2], their_grads[:2])  # the input's and the first weight's
    for ours_grad, their_grad in zip(ours_grads, their_grads, strict=True):
        assert_close(ours_grad, their_grad)
    assert LayerGradCam(case.model, case.layer).attribute(x, 1).grad_fn is None


def test_additional_forward_args_as_captum():
    case = ZOO["extra_args"](torch.float64)
    ours = LayerGradCam(case.model, case.layer).attribute(
        case.inputs[0], 2, additional_forward_args=case.args
    )
    theirs = CaptumLayerGradCam(case.model, case.layer).attribute(
        case.inputs[0], 2, additional_forward_args=case.args
    )
    assert_matches(ours, theirs.detach())


def test_captums_flags_and_name():
    net = OneConv()
    ours, theirs = LayerGradCam(net, net.conv1), CaptumLayerGradCam(net, net.conv1)
    assert ours.multiplies_by_inputs is theirs.multiplies_by_inputs is False
    assert ours.has_convergence_delta() is theirs.has_convergence_delta() is False
    assert LayerGradCam.get_name() == CaptumLayerGradCam.get_name() == "Layer Grad Cam"


def test_data_parallel_runs_its_module():
    net = OneConv()
    parallel = nn.DataParallel(net)
    assert_matches(
        LayerGradCam(parallel, net.conv1, device_ids=None).attribute(grid(), 0),
        CaptumLayerGradCam(net, net.conv1).attribute(grid(), 0).detach(),
    )


def test_refuses_grad_kwargs_it_does_not_know():
    net = OneConv()
    with pytest.raises(
        GradCamError,
        match=r"grad_kwargs=\{'only_inputs': True\}\): "
        r"'only_inputs' is not a torch.autograd.grad keyword gradcam_func "
        r"can honour; it takes 'create_graph', 'retain_graph'",
    ):
        LayerGradCam(net, net.conv1).attribute(grid(), 0, grad_kwargs={"only_inputs": True})


def test_names_every_unknown_grad_kwarg():
    net = OneConv()
    with pytest.raises(GradCamError, match=r"'is_grads_batched', 'only_inputs' is not a torch"):
        LayerGradCam(net, net.conv1).attribute(
            grid(), 0, grad_kwargs={"only_inputs": True, "is_grads_batched": False}
        )


def test_keeps_device_ids_as_captum_does():
    net = OneConv()
    ours = LayerGradCam(net, net.conv1, device_ids=[0, 1])
    theirs = CaptumLayerGradCam(net, net.conv1, device_ids=[0, 1])
    assert ours.device_ids == theirs.device_ids == [0, 1]
