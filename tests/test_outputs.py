"""Models that return structures: the callable target sees the output as returned,
layer_vjp hands it back as is, and its pullback takes a cotangent of the same shape."""

import gc
import re
import weakref
from collections import namedtuple
from dataclasses import dataclass

import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

import gradcam_func as gf
from conftest import assert_close, assert_matches

Pair = namedtuple("Pair", "logits features")


@dataclass
class Result:
    logits: torch.Tensor
    features: torch.Tensor
    note: str = "from a dataclass"


class Segmenter(nn.Module):
    """torchvision's segmentation models return {"out": (B, C, H, W), "aux": ...}."""

    def __init__(self, form):
        super().__init__()
        self.form = form
        self.backbone = nn.Conv2d(3, 6, 3, padding=1)
        self.classifier = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        features = torch.tanh(self.backbone(x))
        logits = self.classifier(features)
        pieces = dict(logits=logits, features=features)
        if self.form == "dict":
            return {"out": logits, "aux": features, "size": x.shape[-1], "none": None}
        if self.form == "namedtuple":
            return Pair(**pieces)
        if self.form == "dataclass":
            return Result(**pieces)
        return (logits, [features, logits.argmax(1)], None)  # nested, with integers


def logits_of(out):
    if isinstance(out, dict):
        return out["out"]
    return out[0] if isinstance(out, tuple) and not hasattr(out, "_fields") else out.logits


def segmentation_score(out, k=2):
    """The class-k logit summed over its predicted pixels (a segmentation target)."""
    logits = logits_of(out)
    mask = (logits.argmax(1) == k).to(logits.dtype)
    return (logits[:, k] * mask).sum((1, 2))


class Scored(nn.Module):
    """What Captum needs: the structure reduced to one score per example."""

    def __init__(self, model, score):
        super().__init__()
        self.model, self.score = model, score

    def forward(self, x):
        return self.score(self.model(x))


FORMS = ["dict", "namedtuple", "dataclass", "nested"]


def make(form):
    torch.manual_seed(0)
    return Segmenter(form).double().eval(), torch.randn(2, 3, 6, 6, dtype=torch.float64)


@pytest.mark.parametrize("form", FORMS)
def test_a_callable_target_sees_the_output_as_returned(form):
    model, x = make(form)
    seen = []

    def score(out):
        seen.append(type(out))
        return segmentation_score(out)

    expected = LayerGradCam(Scored(model, segmentation_score), model.backbone).attribute(x)
    assert_matches(gf.grad_cam(model, "backbone", x, score), expected.detach())
    assert seen and all(t is type(model(x)) for t in seen)


@pytest.mark.parametrize("form", FORMS)
def test_targets_and_top_k_on_a_structure(form):
    model, x = make(form)
    targets = [segmentation_score, lambda out: logits_of(out)[:, 1].mean((1, 2))]
    cams = gf.grad_cam(model, "backbone", x, targets=targets)
    assert_close(cams, torch.stack([gf.grad_cam(model, "backbone", x, t) for t in targets]))
    pooled = lambda out: logits_of(out).mean((2, 3))
    cams, classes = gf.grad_cam(model, "backbone", x, targets=gf.top_k(2, scores=pooled))
    expected = torch.stack(
        [
            LayerGradCam(Scored(model, pooled), model.backbone).attribute(x, row.tolist()).detach()
            for row in classes
        ]
    )
    assert_matches(cams, expected)


@pytest.mark.parametrize("form", FORMS)
def test_layer_vjp_returns_the_structure_and_pulls_back_a_like_cotangent(form):
    model, x = make(form)
    output, act, pullback = gf.layer_vjp(model, "backbone", x)
    assert type(output) is type(model(x))
    logits = logits_of(output)
    weight = torch.randn_like(logits)
    if form == "dict":
        cotangent = {"out": weight, "aux": None, "size": None, "none": None}
    elif form == "namedtuple":
        cotangent = Pair(weight, None)
    elif form == "dataclass":
        cotangent = Result(weight, None)
    else:
        cotangent = (weight, [None, None], None)
    leaf = model.backbone(x).detach().requires_grad_()
    (expected,) = torch.autograd.grad((model.classifier(torch.tanh(leaf)) * weight).sum(), leaf)
    assert_matches(pullback(cotangent), expected)
    assert_close(act, leaf.detach())
    if form == "nested":  # the integer leaf comes back as a plain tensor (it prints as one)
        assert repr(output[1][1]) == repr(model(x)[1][1])


def test_a_cotangent_of_another_structure_is_refused():
    model, x = make("dict")
    _, _, pullback = gf.layer_vjp(model, "backbone", x)
    with pytest.raises(
        gf.GradCamError,
        match=r"^layer_vjp\(\.\.\.\) pullback\(cotangent\): the model returned a dict; the "
        r"cotangent must have the same structure, with a Tensor \(or None for zeros\) at each "
        r"floating-point Tensor of the output; got Tensor\.$",
    ):
        pullback(torch.zeros(2, 4, 6, 6, dtype=torch.float64))


def test_a_misshapen_cotangent_names_its_place_in_the_structure():
    model, x = make("dict")
    output, _, pullback = gf.layer_vjp(model, "backbone", x)
    wrong = {"out": torch.zeros(3, dtype=torch.float64), "aux": None, "size": None, "none": None}
    shape = tuple(output["out"].shape)
    with pytest.raises(
        gf.GradCamError,
        match=rf"^layer_vjp\(\.\.\.\) pullback\(cotangent\): the cotangent at output tensor 0 "
        rf"must be a Tensor shaped like the output, shape {re.escape(str(shape))} and dtype "
        r"torch\.float64; got shape \(3,\) and dtype torch\.float64\. Build it with "
        r"torch\.zeros_like\(output\) \(or of the output's Tensor\), then set the scores",
    ):
        pullback(wrong)
    plain = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh()).double()  # a Tensor
    _, _, pullback = gf.layer_vjp(plain, "0", x)  # output: no place in it to name
    with pytest.raises(gf.GradCamError, match=r"\): the cotangent must be a Tensor shaped"):
        pullback(torch.zeros(3, dtype=torch.float64))


def test_huggingface_model_output():
    from captum._utils.gradient import compute_layer_gradients_and_eval
    from hf_models import Logits, build

    model, x = build("resnet")
    layer = "resnet.encoder.stages.1"
    output, _, pullback = gf.layer_vjp(model, layer, x)
    assert type(output).__name__ == "ImageClassifierOutputWithNoAttention"
    assert_close(output.logits, model(x).logits.detach())
    grads = pullback(type(output)(logits=torch.eye(5)[[1, 3]]))
    (expected,), _ = compute_layer_gradients_and_eval(
        Logits(model), model.get_submodule(layer), x, [1, 3]
    )
    assert_matches(grads, expected.detach())


class ManyHeads(nn.Module):
    """A dict of seven (B, 2) heads over one convolution."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.heads = nn.ModuleList(nn.Linear(4, 2) for _ in range(7))

    def forward(self, x):
        pooled = self.conv(x).mean((2, 3))
        return {f"h{i}": head(pooled) for i, head in enumerate(self.heads)}


def test_messages_list_the_first_six_tensors_and_name_nameless_targets():
    model, x = ManyHeads().eval(), torch.randn(2, 3, 5, 5)
    shown = "; ".join(f"out['h{i}'] (2, 2) torch.float32" for i in range(6))
    with pytest.raises(
        gf.GradCamError, match=r"whose Tensors are: " + re.escape(shown) + r"\. Pass"
    ):
        gf.grad_cam(model, "conv", x, 0)

    class Picker:  # a callable without __name__: named by its type
        def __call__(self, out):
            return out["missing"][:, 0]

    with pytest.raises(
        gf.GradCamError,
        match=r"target=Picker\): the target raised KeyError: 'missing' \(it was given the "
        r"model's output, a dict; its Tensors: " + re.escape(shown) + r"\)\.$",
    ):
        gf.grad_cam(model, "conv", x, Picker())
    with pytest.raises(
        gf.GradCamError,
        match=r"^grad_cam\(\.\.\., targets=top_k\(2\)\): an index target needs a model that "
        r".* e\.g\. targets=top_k\(2, scores=lambda out: out\['h0'\]\), or wrap",
    ):
        gf.grad_cam(model, "conv", x, targets=gf.top_k(2))


def test_top_k_names_its_picked_scores_when_they_fail():
    """top_k(k, scores=...) reads the scores once to choose the classes, then once per
    target; a failure in a target's read names it top_k_class."""
    model, x = ManyHeads().eval(), torch.randn(2, 3, 5, 5)
    reads = []

    def scores(out):
        reads.append(1)
        if len(reads) > 1:
            raise KeyError("gone")
        return out["h0"]

    with pytest.raises(
        gf.GradCamError,
        match=r"^grad_cam\(\.\.\., targets\[0\]=top_k_class\): the target raised KeyError: "
        r"'gone' \(it was given the model's output, a dict;",
    ):
        gf.grad_cam(model, "conv", x, targets=gf.top_k(2, scores=scores))


def test_flatten_keeps_no_tensor_alive_after_it_returns():
    """No reference cycle holds a flattened tensor until Python's cycle collector runs
    (forward mode flattens every chunk's output; each would otherwise linger)."""
    from gradcam_func._outputs import flatten

    value = {"logits": (torch.ones(3), 2), "aux": [torch.zeros(2)]}
    alive = weakref.ref(value["logits"][0])
    gc.disable()
    try:
        result = flatten(value)
        assert len(result[0]) == 2
        del result, value
        assert alive() is None
    finally:
        gc.enable()
