"""Bad input raises GradCamError naming the argument, what was expected and what was given."""

import pytest
import torch
from torch import nn

import gradcam_func as gf
from gradcam_func import GradCamError


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 5))


@pytest.fixture
def x():
    return torch.randn(2, 3, 6, 6)


def test_layer_name_not_in_the_model(net, x):
    with pytest.raises(GradCamError, match=r"grad_cam\(\.\.\., layer='layer9'\): the model "
                       r"has no submodule 'layer9'.*'0', '1'.*named_modules"):
        gf.grad_cam(net, "layer9", x, 1)


def test_layer_module_not_in_the_model(net, x):
    with pytest.raises(GradCamError, match=r"layer=Conv2d\(\.\.\.\)\): this module is not "
                       r"a submodule of the model \(Sequential\)"):
        gf.grad_cam(net, nn.Conv2d(3, 4, 3), x, 1)


def test_layer_of_the_wrong_type(net, x):
    with pytest.raises(GradCamError, match=r"layer=\.\.\.\): expected an nn.Module.*got int 3"):
        gf.grad_cam(net, 3, x, 1)


def test_layer_never_called(x):
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.used(x.mean((2, 3)))

    with pytest.raises(GradCamError, match=r"layer='unused'\): the layer was not called "
                       r"during the model's forward pass"):
        gf.grad_cam(Skips(), "unused", x, 1)


def test_layer_called_twice(x):
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    with pytest.raises(GradCamError, match=r"layer='conv'\): the layer is called more than "
                       r"once in one forward pass.*Wrap each use in its own module"):
        gf.grad_cam(Shared(), "conv", x, 1)


@pytest.mark.parametrize("target, fragment", [
    (5, r"target=5\): index 5 is out of range for axis 1 of the model's output, which "
        r"has shape \(2, 5\)"),
    ((-6,), r"index -6 is out of range"),
    ([1, 7], r"target\[1\]=7\): index 7 is out of range"),
    ((1, 2), r"has 2 indices, but selecting one score per example of an output of shape "
             r"\(2, 5\) needs exactly 1"),
])
def test_target_out_of_range_or_of_the_wrong_length(net, x, target, fragment):
    with pytest.raises(GradCamError, match=fragment):
        gf.grad_cam(net, "0", x, target)


@pytest.mark.parametrize("target", [[1, 2, 3], torch.tensor([0, 1, 2])])
def test_per_example_target_length_must_match_the_batch(net, x, target):
    with pytest.raises(GradCamError, match=r"one entry per example: got 3 entries for a "
                                           r"batch of 2"):
        gf.grad_cam(net, "0", x, target)


def test_float_tensor_target(net, x):
    with pytest.raises(GradCamError, match=r"a Tensor target must hold one integer index.*"
                                           r"dtype torch.float32"):
        gf.grad_cam(net, "0", x, torch.tensor([0.5, 1.0]))


def test_target_of_an_unknown_type(net, x):
    with pytest.raises(GradCamError, match=r"target=\.\.\.\): expected None, an int.*got "
                                           r"str 'cat'"):
        gf.grad_cam(net, "0", x, "cat")


def test_target_and_targets_together(net, x):
    with pytest.raises(GradCamError, match=r"target=\.\.\., targets=\.\.\.\): pass one of "
                                           r"them"):
        gf.grad_cam(net, "0", x, 1, targets=[1, 2])


def test_targets_not_a_sequence(net, x):
    with pytest.raises(GradCamError, match=r"targets=\.\.\.\): expected a sequence of "
                                           r"targets.*got int 3"):
        gf.grad_cam(net, "0", x, targets=3)
    with pytest.raises(GradCamError, match=r"targets=\[\]\): expected at least one"):
        gf.grad_cam(net, "0", x, targets=[])


def test_bad_target_inside_targets_names_its_position(net, x):
    with pytest.raises(GradCamError, match=r"targets\[1\]=9\): index 9 is out of range"):
        gf.grad_cam(net, "0", x, targets=[0, 9])


def test_target_none_needs_one_score_per_example(net, x):
    with pytest.raises(GradCamError, match=r"target=None\): without a target the model must "
                                           r"return one score per example.*\(2, 5\)"):
        gf.grad_cam(net, "0", x)


def test_callable_target_of_the_wrong_shape(net, x):
    def everything(out):
        return out

    with pytest.raises(GradCamError, match=r"target=everything\): a callable target must "
                       r"map the output to one floating-point score per example, shape "
                       r"\(2,\); it returned shape \(2, 5\) and dtype torch.float32"):
        gf.grad_cam(net, "0", x, everything)


@pytest.mark.parametrize("inputs, fragment", [
    ([[1.0, 2.0]], r"inputs=\.\.\.\): expected a Tensor .*got list"),
    ((torch.randn(2, 3, 6, 6), "b"), r"inputs\[1\]=\.\.\.\): expected a Tensor.*got str"),
    (torch.tensor(1.0), r"expected a batch with dim 0 as the batch axis, got a 0-d Tensor"),
    ((torch.randn(2, 3, 6, 6), torch.randn(3, 1)),
     r"same batch size in dim 0, got shapes \(2, 3, 6, 6\), \(3, 1\)"),
])
def test_inputs_must_be_batched_tensors(net, inputs, fragment):
    with pytest.raises(GradCamError, match=fragment):
        gf.grad_cam(net, "0", inputs, 1)


def test_params_need_a_module(net, x):
    with pytest.raises(GradCamError, match=r"params=\.\.\.\): params replace an nn.Module's "
                                           r"parameters.*the model is a function"):
        gf.grad_cam(lambda x: net(x), net[0], x, 1, params={})


def test_index_target_on_a_structured_output_shows_the_callable(net, x):
    with pytest.raises(GradCamError, match=r"target=1\): an index target needs a model that "
                       r"returns a Tensor of scores, but this model returns dict, whose "
                       r"Tensors are: out\['logits'\] \(2, 5\) torch.float32\. Pass a "
                       r"callable target.*target=lambda out: out\['logits'\]\[:, k\], or wrap"):
        gf.grad_cam(lambda x: {"logits": net(x)}, net[0], x, 1)


def test_layer_vjp_names_itself(net, x):
    with pytest.raises(GradCamError, match=r"^layer_vjp\(\.\.\., layer='nope'\)"):
        gf.layer_vjp(net, "nope", x)


def test_errors_are_value_and_type_errors(net, x):
    with pytest.raises(ValueError):
        gf.grad_cam(net, "0", x, 9)
    with pytest.raises(TypeError):
        gf.grad_cam(net, "0", "not a tensor", 1)
