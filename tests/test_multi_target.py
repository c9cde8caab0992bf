"""targets=[...]: result[k] equals the single-target call, from one forward pass."""

import pytest
import torch
from captum.attr import LayerGradCam
from hypothesis import given, strategies as st
from torch import nn

import gradcam_func as gf
from conftest import assert_close, assert_not_zero
from test_layer_vjp import counted_model
from zoo import ZOO


def all_forms(batch):
    classes = [(2 + i) % 3 for i in range(batch)]
    return [
        1,
        (2,),
        torch.tensor(0),
        torch.tensor(classes),
        classes,
        [(c,) for c in classes],
        lambda out: out[:, 0] - 2 * out[:, 1],
        lambda out: out.log_softmax(1)[:, 2],
    ]


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize(
    "name", ["plain_cnn", "residual", "extra_args", "tuple_output", "conv1d", "transformer", "mlp"]
)
def test_stacking_equals_single_calls_for_every_form(name, chunk_size):
    case = ZOO[name](torch.float64)
    x = case.inputs[0]
    targets = all_forms(len(x))
    kwargs = dict(additional_forward_args=case.args or None, relu=False)
    stacked = gf.grad_cam(
        case.model, case.layer, x, targets=targets, chunk_size=chunk_size, **kwargs
    )
    singles = [gf.grad_cam(case.model, case.layer, x, t, **kwargs) for t in targets]
    if isinstance(stacked, tuple):  # a tuple-output layer: a tuple of stacks
        for part, stack in enumerate(stacked):
            assert_close(stack, torch.stack([s[part] for s in singles]))
    else:
        assert stacked.shape[0] == len(targets)
        assert_close(stacked, torch.stack(singles))


@pytest.mark.parametrize("relu", [False, True])
def test_stacked_index_targets_equal_captum(relu):
    case = ZOO["residual"](torch.float64)
    x = case.inputs[0]
    cams = gf.grad_cam(case.model, case.layer, x, targets=[0, 1, 3], relu=relu)
    for k, target in enumerate([0, 1, 3]):
        expected = (
            LayerGradCam(case.model, case.layer)
            .attribute(x, target, relu_attributions=relu)
            .detach()
        )
        assert_close(cams[k], expected)


class Score(nn.Module):
    """The model followed by a fixed score, so Captum can explain it with target=None."""

    def __init__(self, model, score):
        super().__init__()
        self.model, self.score = model, score

    def forward(self, x):
        return self.score(self.model(x))


@pytest.mark.parametrize(
    "score",
    [
        lambda out: out.softmax(1)[:, 2],
        lambda out: out.log_softmax(1)[:, 0],
        lambda out: torch.logsumexp(out, 1) * out[:, 1],
    ],
    ids=["softmax", "log_softmax", "product"],
)
def test_non_linear_callable_scores_are_exact(score):
    case = ZOO["plain_cnn"](torch.float64)
    x = case.inputs[0]
    expected = LayerGradCam(Score(case.model, score), case.layer).attribute(x).detach()
    assert_close(gf.grad_cam(case.model, case.layer, x, score), expected)
    assert_close(gf.grad_cam(case.model, case.layer, x, targets=[0, score])[1], expected)


@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=3, max_size=3))
def test_a_linear_combination_of_targets_gives_that_combination_of_cams(coefficients):
    case = ZOO["plain_cnn"](torch.float64)
    x = case.inputs[0]
    a, b, c = coefficients
    cams = gf.grad_cam(
        case.model,
        case.layer,
        x,
        targets=[0, 1, 4, lambda out: a * out[:, 0] + b * out[:, 1] + c * out[:, 4]],
    )
    assert_close(cams[3], a * cams[0] + b * cams[1] + c * cams[2])


@pytest.mark.parametrize("k", [1, 3, 5])  # 5: every class of the (3, 5) output
def test_top_k_picks_each_examples_best_classes(k):
    case = ZOO["plain_cnn"](torch.float64)
    x = case.inputs[0]
    cams, classes = gf.grad_cam(case.model, case.layer, x, targets=gf.top_k(k))
    expected_classes = case.model(x).topk(k, dim=1).indices.T
    assert torch.equal(classes, expected_classes)
    assert cams.shape[:2] == (k, len(x))
    for j in range(k):
        assert_close(cams[j], gf.grad_cam(case.model, case.layer, x, classes[j].tolist()))


def test_top_k_runs_the_forward_once():
    model, before, after = counted_model()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    gf.grad_cam(model, model[3], x, 0)
    before.calls = after.calls = 0
    gf.grad_cam(model, model[3], x, targets=gf.top_k(2))
    assert before.calls == 1 and after.calls == 1


def test_top_k_rejects_bad_k_and_outputs():
    case = ZOO["plain_cnn"](torch.float64)
    with pytest.raises(gf.GradCamError, match=r"top_k\(k=0\): expected a positive int"):
        gf.top_k(0)
    with pytest.raises(
        gf.GradCamError,
        match=r"^grad_cam\(\.\.\., targets=top_k\(9\)\): needs class scores of "
        r"shape \(B, N\) with N >= 9 classes, got \(3, 5\)\.$",
    ):
        gf.grad_cam(case.model, case.layer, case.inputs[0], targets=gf.top_k(9))
    for bad in (True, 2.0, "3"):
        with pytest.raises(gf.GradCamError, match=r"expected a positive int"):
            gf.top_k(bad)
    with pytest.raises(
        gf.GradCamError,
        match=r"^top_k\(2, scores=\.\.\.\): expected a callable output -> \(B, N\) scores, "
        r"e\.g\. lambda out: out\.logits; got list \[1, 2\]\.$",
    ):
        gf.top_k(2, scores=[1, 2])
    with pytest.raises(
        gf.GradCamError,
        match=r"^grad_cam\(\.\.\., targets=top_k\(2, scores=\.\.\.\)\): scores must return a "
        r"Tensor \(B, N\), returned str 'x'\.$",
    ):
        gf.grad_cam(
            case.model, case.layer, case.inputs[0], targets=gf.top_k(2, scores=lambda out: "x")
        )


@pytest.mark.parametrize("autodiff", ["reverse", "auto"])
def test_targets_all_is_every_class_in_order_against_captum(autodiff):
    """targets='all' on a (B, N) output: one map per class 0..N-1, each Captum's."""
    case = ZOO["residual"](torch.float64)
    x = case.inputs[0]
    cams = gf.grad_cam(case.model, case.layer, x, targets="all", autodiff=autodiff)
    classes = case.model(x).shape[1]
    assert cams.shape[0] == classes
    for k in range(classes):
        expected = LayerGradCam(case.model, case.layer).attribute(x, k).detach()
        assert_not_zero(expected)
        assert_close(cams[k], expected)
