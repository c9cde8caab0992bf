"""grad_cam gives captum.attr.LayerGradCam's numbers on every kind of model in the zoo."""

import itertools

import pytest
import torch
from captum.attr import LayerGradCam

import gradcam_func as gf
from conftest import assert_close, assert_matches
from zoo import ZOO

DTYPES = [torch.float32, torch.float64]
OPTIONS = [
    dict(relu=r, sum_channels=s, attribute_to_layer_input=a)
    for r, s, a in itertools.product([False, True], repeat=3)
]


def captum(case, target, *, relu=False, sum_channels=True, attribute_to_layer_input=False):
    result = LayerGradCam(case.model, case.layer).attribute(
        case.inputs if len(case.inputs) > 1 else case.inputs[0],
        target,
        additional_forward_args=case.args or None,
        attribute_to_layer_input=attribute_to_layer_input,
        relu_attributions=relu,
        attr_dim_summation=sum_channels,
    )
    return tuple(r.detach() for r in result) if isinstance(result, tuple) else result.detach()


def ours(case, target, **options):
    return gf.grad_cam(
        case.model,
        case.layer,
        case.inputs if len(case.inputs) > 1 else case.inputs[0],
        target,
        additional_forward_args=case.args or None,
        **options,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: "-".join(k for k, v in o.items() if v) or "default"
)
@pytest.mark.parametrize("name", ZOO)
def test_matches_captum_across_options(name, options, dtype):
    case = ZOO[name](dtype)
    assert_matches(ours(case, case.target, **options), captum(case, case.target, **options))


def target_forms(case):
    """Every Captum target form naming class ``case.target`` (or per-example classes)."""
    batch = case.inputs[0].shape[0]
    classes = [(case.target + i) % 3 for i in range(batch)]
    return {
        "int": case.target,
        "tuple": (case.target,),
        "scalar_tensor": torch.tensor(case.target),
        "per_example_tensor": torch.tensor(classes),
        "list_of_ints": classes,
        "list_of_tuples": [(c,) for c in classes],
    }


@pytest.mark.parametrize("form", list(target_forms(ZOO["plain_cnn"](torch.float64))))
@pytest.mark.parametrize("name", ZOO)
def test_matches_captum_for_every_target_form(name, form):
    case = ZOO[name](torch.float64)
    target = target_forms(case)[form]
    assert_matches(ours(case, target), captum(case, target))


class Scores(torch.nn.Module):
    """A model returning one score per example, (B,) or (B, 1), for target=None."""

    def __init__(self, model, keepdim):
        super().__init__()
        self.model, self.keepdim = model, keepdim

    def forward(self, *args):
        out = self.model(*args)
        return out[:, 1:2] if self.keepdim else out[:, 1]


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("name", ["plain_cnn", "extra_args", "tuple_output"])
def test_target_none_on_a_per_example_score(name, keepdim):
    case = ZOO[name](torch.float64)
    case.model = Scores(case.model, keepdim)
    assert_matches(ours(case, None), captum(case, None))


def test_tuple_targets_on_a_three_dimensional_output():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    model = torch.nn.Sequential(
        conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d((2, 3)), torch.nn.Flatten(2)
    )  # output (B, 4, 6)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    for target in [(1, 4), [(0, 5), (3, 2)], (2, -1)]:
        assert_close(
            gf.grad_cam(model, conv, x, target),
            LayerGradCam(model, conv).attribute(x, target).detach(),
        )


@pytest.mark.parametrize("form", ["int", "tuple", "list"])
def test_minus_n_is_the_first_class(form):
    """Negative indices count from the end down to -N, as in Python. Captum takes -N for
    an int or a tuple; its per-example list (torch.gather) takes none, so the list's
    reference is Captum at the same classes counted from 0."""
    case = ZOO["plain_cnn"](torch.float64)
    batch, n = case.model(*case.inputs).shape
    first = {"int": 0, "tuple": (0,), "list": list(range(batch))}[form]
    target = {"int": -n, "tuple": (-n,), "list": [i - n for i in range(batch)]}[form]
    expected = captum(case, first)
    if form != "list":
        assert_close(captum(case, target), expected)
    assert_matches(ours(case, target), expected)


@pytest.mark.parametrize("keepdim", [False, True])
def test_target_none_on_a_batch_of_one(keepdim):
    case = ZOO["plain_cnn"](torch.float64)
    case.model = Scores(case.model, keepdim)
    case.inputs = tuple(x[:1] for x in case.inputs)
    assert_matches(ours(case, None), captum(case, None))


def test_dotted_layer_name_equals_the_module():
    case = ZOO["residual"](torch.float64)
    assert_close(
        gf.grad_cam(case.model, "bn", case.inputs[0], 1),
        gf.grad_cam(case.model, case.model.bn, case.inputs[0], 1),
    )


def test_a_plain_callable_model():
    case = ZOO["plain_cnn"](torch.float64)
    fn = lambda x: case.model(x) * 2.0
    assert_close(
        gf.grad_cam(fn, case.layer, case.inputs[0], 1),
        2.0 * LayerGradCam(case.model, case.layer).attribute(case.inputs[0], 1).detach(),
    )


def test_a_layer_that_returns_a_number_beside_its_tensor():
    """The layer returns (tensor, 2.5) and the model uses both: the number reaches the
    rest of the model unchanged. Against autograd by hand at the tensor."""

    class Tagged(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(x), 2.5

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.fc = Tagged(), torch.nn.Linear(4, 3)

        def forward(self, x):
            h, scale = self.block(x)
            return self.fc(torch.tanh(h * scale).mean((2, 3)))

    torch.manual_seed(0)
    model = Model().double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    h = model.block.conv(x).detach().requires_grad_()
    (grads,) = torch.autograd.grad(model.fc(torch.tanh(h * 2.5).mean((2, 3)))[:, 1].sum(), h)
    expected = (grads.mean((2, 3), keepdim=True) * h).sum(1, keepdim=True).detach()
    assert_matches(gf.grad_cam(model, "block", x, 1), expected)


@pytest.mark.parametrize("name", ["plain_cnn", "residual", "conv1d", "transformer", "mlp"])
def test_batch_equals_stacked_single_examples(name):
    case = ZOO[name](torch.float64)
    x = case.inputs[0]
    classes = [i % 3 for i in range(len(x))]
    whole = gf.grad_cam(case.model, case.layer, x, classes)
    stacked = torch.cat(
        [gf.grad_cam(case.model, case.layer, x[i : i + 1], c) for i, c in enumerate(classes)]
    )
    assert_close(whole, stacked)


@pytest.mark.parametrize("name", ["plain_cnn", "residual", "conv1d", "mlp"])
def test_under_vmap_over_examples_equals_the_batch(name):
    case = ZOO[name](torch.float64)
    x = case.inputs[0]
    per_example = torch.func.vmap(
        lambda xi: gf.grad_cam(case.model, case.layer, xi[None], case.target)[0]
    )(x)
    assert_close(per_example, gf.grad_cam(case.model, case.layer, x, case.target))
