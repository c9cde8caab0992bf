"""autodiff="forward": Grad-CAM, XGradCAM and HiResCAM from jvps equal reverse mode and
Captum's loop, for every target form and option; "auto" picks the cheaper mode."""

import copy
import re

import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

import gradcam_func as gf
from conftest import (
    FINITE_DIFFERENCES,
    TOLERANCES,
    assert_close,
    assert_matches,
    assert_not_zero,
    exactly,
)
from gradcam_func._forward_mode import (
    check_tolerance,
    choose_mode,
    directions_needed,
    forward_is_cheaper,
)
from layer_inputs import CASES
from zoo import ZOO

FORWARD = ["gradcam", "xgradcam", "hirescam"]


def both(model, layer, x, method="gradcam", **options):
    mine = {
        mode: gf.cam(model, layer, x, method=method, autodiff=mode, **options)
        for mode in ("forward", "reverse")
    }
    return mine["forward"], mine["reverse"]


@pytest.mark.parametrize("sum_channels", [True, False])
@pytest.mark.parametrize("method", FORWARD)
@pytest.mark.parametrize("name", ["plain_cnn", "residual", "conv1d", "two_inputs", "extra_args"])
def test_forward_equals_reverse_for_every_target_form(name, method, sum_channels):
    case = ZOO[name](torch.float64)
    x = case.inputs if len(case.inputs) > 1 else case.inputs[0]
    batch = case.inputs[0].shape[0]
    targets = [
        0,
        lambda out: out[:, 2] - out[:, 0],
        (2,),
        torch.tensor(1),
        [1] * batch,
        torch.tensor([2] * batch),
        lambda out: out.softmax(1)[:, 1],
    ]  # interleaved
    forward, reverse = both(
        case.model,
        case.layer,
        x,
        method,
        targets=targets,
        sum_channels=sum_channels,
        relu=True,
        additional_forward_args=case.args or None,
    )
    assert_matches(forward, reverse)


def test_forward_equals_captums_loop_for_all_classes_and_top_k():
    case = ZOO["residual"](torch.float64)
    x = case.inputs[0]
    every = gf.grad_cam(case.model, case.layer, x, targets="all", autodiff="forward")
    explainer = LayerGradCam(case.model, case.layer)
    assert_matches(every, torch.stack([explainer.attribute(x, k).detach() for k in range(4)]))
    top, classes = gf.grad_cam(case.model, case.layer, x, targets=gf.top_k(3), autodiff="forward")
    assert_matches(
        top, torch.stack([explainer.attribute(x, row.tolist()).detach() for row in classes])
    )


@pytest.mark.parametrize("callables", [0, 1])
def test_one_callable_or_none_among_index_targets_against_captum(callables):
    """Forward mode's Jacobian rows in the targets' order, for K index targets with one
    callable or none; without ReLU the map is linear in the score, so the difference's map
    is Captum's for class 2 minus Captum's for class 0."""
    case = ZOO["residual"](torch.float64)
    x = case.inputs[0]
    explainer = LayerGradCam(case.model, case.layer)
    captum = [explainer.attribute(x, k).detach() for k in range(4)]
    targets, expected = [3, 0], [captum[3], captum[0]]
    if callables:
        targets.insert(1, lambda out: out[:, 2] - out[:, 0])
        expected.insert(1, captum[2] - captum[0])
    forward = gf.grad_cam(case.model, case.layer, x, targets=targets, autodiff="forward")
    assert_not_zero(expected[1])
    assert_matches(forward, torch.stack(expected))


def test_params_tuple_inputs_and_layer_inputs():
    case = ZOO["two_inputs"](torch.float64)
    params = {k: v.detach() * 1.3 for k, v in case.model.named_parameters()}
    forward, reverse = both(case.model, case.layer, case.inputs, targets=[0, 2], params=params)
    assert_matches(forward, reverse)
    for name in ("basic_block_conv1", "fire_expand3x3", "model_input"):
        model, layer, x = CASES[name]()
        forward, reverse = both(model, layer, x, targets=[0, 1, 4], attribute_to_layer_input=True)
        assert_matches(forward, reverse)


def test_train_mode_batchnorm_and_its_statistics():
    """In train mode the examples interact through the batch statistics: each example
    gets directions of its own, and the running statistics move as in one forward."""
    case = ZOO["residual"](torch.float64)
    case.model.train()
    twin, plain = copy.deepcopy(case.model), copy.deepcopy(case.model)
    x = case.inputs[0]
    forward = gf.grad_cam(case.model, case.layer, x, targets=[0, 1, 3], autodiff="forward")
    reverse = gf.grad_cam(twin, "bn", x, targets=[0, 1, 3], autodiff="reverse")
    assert_matches(forward, reverse)
    plain(x)
    for (key, mine), (_, expected) in zip(
        case.model.named_buffers(), plain.named_buffers(), strict=True
    ):
        assert torch.equal(mine, expected), key


def test_vmap_over_inputs_and_gradients_of_the_cam():
    case = ZOO["plain_cnn"](torch.float64)
    xs = torch.randn(3, 2, 3, 8, 8, dtype=torch.float64)

    def explain(x):
        return gf.grad_cam(case.model, case.layer, x, targets=[0, 1], autodiff="forward")

    assert_close(torch.func.vmap(explain)(xs), torch.stack([explain(x) for x in xs]))
    params = {k: v.detach() for k, v in case.model.named_parameters()}
    x = xs[0]
    generator = torch.Generator().manual_seed(0)
    direction = {
        k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in params.items()
    }

    def loss(p, mode):
        cams = gf.grad_cam(case.model, case.layer, x, targets=[0, 3], params=p, autodiff=mode)
        return (cams**2).sum()

    grads = torch.func.grad(lambda p: loss(p, "forward"))(params)
    analytic = sum((grads[k] * direction[k]).sum() for k in params)
    eps = 1e-6
    numeric = (
        loss({k: v + eps * direction[k] for k, v in params.items()}, "reverse")
        - loss({k: v - eps * direction[k] for k, v in params.items()}, "reverse")
    ) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, **FINITE_DIFFERENCES)


class MixesExamples(nn.Module):
    """Scales by the batch mean in eval mode: examples interact outside BatchNorm."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.conv(x))
        h = h * (1 + h.mean(0, keepdim=True))
        return self.fc(h.mean((2, 3)))


def test_a_model_that_mixes_examples_is_caught():
    model = MixesExamples().double().eval()
    x = torch.randn(3, 3, 5, 5, dtype=torch.float64)
    with pytest.raises(
        gf.GradCamError,
        match=exactly(
            "grad_cam(..., autodiff='forward'): the model mixes the examples of the batch "
            "(the first target's map differs from reverse mode's), so one direction per "
            "channel cannot serve every example. Use autodiff='reverse'."
        ),
    ):
        gf.grad_cam(model, "conv", x, targets=[0, 1, 2], autodiff="forward")
    auto = gf.grad_cam(model, "conv", x, targets=list(range(3)) * 20)  # "auto": forward
    assert_matches(
        auto, gf.grad_cam(model, "conv", x, targets=list(range(3)) * 20, autodiff="reverse")
    )


@pytest.mark.parametrize(
    "dtype, rtol",
    # 1e-3, or 8 machine epsilons where that is coarser: float16 8 x 2**-10, bfloat16 8 x 2**-7.
    [(torch.float64, 1e-3), (torch.float32, 1e-3), (torch.float16, 2**-7), (torch.bfloat16, 2**-4)],
)
def test_the_check_of_the_first_map_allows_eight_epsilons_or_a_thousandth(dtype, rtol):
    assert check_tolerance(torch.finfo(dtype).eps) == rtol


@pytest.mark.parametrize("method", ["layercam", "gradcam++", "eigengradcam", "gradcam_elementwise"])
def test_methods_without_a_forward_form_say_why(method):
    case = ZOO["plain_cnn"](torch.float64)
    with pytest.raises(
        gf.GradCamError,
        match=exactly(
            f"cam(..., method='{method}', autodiff='forward'): {method} applies a non-linearity "
            "to the gradient before summing it, so no few directions give it; forward mode "
            "serves Grad-CAM, XGradCAM and HiResCAM. Use autodiff='reverse' (or 'auto')."
        ),
    ):
        gf.cam(case.model, case.layer, case.inputs[0], 1, method=method, autodiff="forward")
    gf.cam(
        case.model, case.layer, case.inputs[0], targets=list(range(5)) * 40, method=method
    )  # "auto" takes reverse mode


def test_auto_compares_directions_with_targets():
    model = ZOO["plain_cnn"](torch.float64).model
    shape = (8, 256, 14, 14)
    assert directions_needed("gradcam", shape, True, False) == 256
    assert directions_needed("hirescam", shape, True, False) == 196
    assert directions_needed("hirescam", shape, False, True) == 8 * 256 * 196
    assert choose_mode("auto", "gradcam", 1000, shape, True, model, True, "c") == "forward"
    assert choose_mode("auto", "gradcam", 100, shape, True, model, True, "c") == "reverse"
    assert choose_mode("auto", "hirescam", 1000, shape, True, model, True, "c") == "forward"
    assert choose_mode("auto", "gradcam", 1000, shape, True, model, False, "c") == "reverse"
    assert choose_mode("reverse", "gradcam", 1000, shape, True, model, True, "c") == "reverse"
    # at the edges: forward is tried when 0.75 x directions < K, strictly
    small = (2, 8, 4, 4)  # 8 channels (6 after the factor), 16 positions (12)
    assert choose_mode("auto", "gradcam", 7, small, True, model, True, "c") == "forward"
    assert choose_mode("auto", "gradcam", 6, small, True, model, True, "c") == "reverse"
    assert choose_mode("auto", "hirescam", 13, small, True, model, True, "c") == "forward"
    assert choose_mode("auto", "hirescam", 12, small, True, model, True, "c") == "reverse"
    training = copy.deepcopy(model).train()  # examples coupled: 2 x 8 directions (12)
    assert choose_mode("auto", "gradcam", 12, small, True, training, True, "c") == "reverse"
    assert choose_mode("auto", "gradcam", 13, small, True, training, True, "c") == "forward"
    with pytest.raises(
        gf.GradCamError,
        match=r"autodiff='sideways'\): expected 'auto', "
        r"'reverse' or 'forward'",
    ):
        choose_mode("sideways", "gradcam", 10, shape, True, model, True, "c")


def test_auto_weighs_the_forward_rerun_per_chunk_against_k_pullbacks():
    # ResNet-18 layer3-like: a chunk of 10 pullbacks through the head costs 0.3 s, the
    # whole forward 0.35 s; 256 directions in chunks of 10 cost 256 * 0.75 * 0.03 +
    # 26 * 0.35 = 14.9 s
    assert forward_is_cheaper(256, 10, 1000, 0.35, 0.3, 10)  # against 30 s
    assert not forward_is_cheaper(256, 10, 400, 0.35, 0.3, 10)  # against 12 s
    # layer4-like: the head is only the classifier, 50 chunks of 20 cost 1 s
    assert not forward_is_cheaper(512, 20, 1000, 0.35, 0.02, 20)
    # all directions in one chunk: one extra forward, 0.73 s against 1 s
    assert forward_is_cheaper(512, None, 1000, 0.35, 0.02, 20)
    # a tie keeps reverse mode: 4 x 0.75 x 1 s + 1 x 0 s against 3 chunks of 1 s
    assert not forward_is_cheaper(4, None, 3, 0.0, 1.0, 1)
    assert forward_is_cheaper(4, None, 4, 0.0, 1.0, 1)


def test_auto_and_forward_give_the_same_maps_whichever_mode_auto_takes():
    case = ZOO["residual"](torch.float64)
    x = case.inputs[0]
    forced = gf.grad_cam(case.model, case.layer, x, targets="all", autodiff="forward")
    assert_matches(gf.grad_cam(case.model, case.layer, x, targets="all"), forced)


class Segments(nn.Module):
    """conv (the layer) -> tanh -> 1x1 conv; returns {"out": logits, "size": an int}."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.backbone = nn.Conv2d(3, 6, 3, padding=1)
        self.classifier = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return {"out": self.classifier(torch.tanh(self.backbone(x))), "size": x.shape[-1]}


@pytest.mark.parametrize("method", FORWARD)
def test_only_callable_targets_on_a_structured_output(method):
    """Callable targets only (no index to read), on a dict output with an int beside the
    logits: forward mode against autograd by hand at the layer."""
    model = Segments().double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    targets = [
        lambda out: out["out"][:, 1].mean((1, 2)),
        lambda out: out["out"][:, 3, 0, 0] * out["size"],
    ]
    acts = model.backbone(x).detach().requires_grad_()
    logits = model.classifier(torch.tanh(acts))
    expected = []
    for target in targets:
        (grads,) = torch.autograd.grad(
            target({"out": logits, "size": 5}).sum(), acts, retain_graph=True
        )
        a = acts.detach()
        if method == "gradcam":
            weights = grads.mean((2, 3), keepdim=True)
        elif method == "xgradcam":
            weights = (grads * a).sum((2, 3), keepdim=True) / (a.sum((2, 3), keepdim=True) + 1e-7)
        else:  # hirescam
            weights = grads
        expected.append((weights * a).sum(1, keepdim=True))
    ours = gf.cam(model, "backbone", x, method=method, targets=targets, autodiff="forward")
    assert_matches(ours, torch.stack(expected))


def _record_chunks(monkeypatch):
    """The number of directions each vmapped jvp of forward mode gets, in call order."""
    import gradcam_func._forward_mode as forward_mode

    sizes = []
    quiet = forward_mode.vmap_quietly

    def recorded(fn, *args):
        def counted(indices):
            sizes.append(len(indices))
            return quiet(fn, *args)(indices)

        return counted

    monkeypatch.setattr(forward_mode, "vmap_quietly", recorded)
    return sizes


@pytest.mark.parametrize(("chunk_size", "expected"), [(3, [3, 3, 3, 3, 3, 1]), (None, [16])])
def test_chunk_size_reaches_the_vmap_over_directions(monkeypatch, chunk_size, expected):
    """chunk_size bounds forward mode's memory by running the directions in chunks (the
    memory itself is measured in benchmarks/forward_mode.py --memory); the maps are the
    same either way."""
    sizes = _record_chunks(monkeypatch)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 20)
    ).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    ours = gf.cam(model, "0", x, targets="all", autodiff="forward", chunk_size=chunk_size)
    assert sizes == expected  # in train mode: 8 channels x 2 examples, 16 directions
    assert_matches(ours, gf.cam(model, "0", x, targets="all", autodiff="reverse"))


def test_the_default_chunk_of_directions_is_twice_reverse_modes_chunk(monkeypatch):
    """chunk_size="auto" in forward mode: twice as many directions as reverse mode's
    default chunk holds pullbacks at the same layer, counted after reverse mode's
    rounding (2^22 elements at the layer), at most every direction."""
    from gradcam_func._grad_cam import forward_chunk_size

    # ResNet-50 layer3, batch 8: 2^22 // (8 x 1024 x 196) = 2 pullbacks, so 4 directions
    assert forward_chunk_size(1024, 8, 1024 * 196) == 4
    assert forward_chunk_size(196, 8, 1024 * 196) == 4  # HiResCAM's positions there
    assert forward_chunk_size(256, 8, 256 * 196) == 20  # ResNet-18 layer3: 10 pullbacks
    assert forward_chunk_size(3, 8, 256 * 196) == 3  # never more than the directions
    assert forward_chunk_size(10**6, 8, 10**7) == 2  # reverse mode's floor of 1, twice
    sizes = _record_chunks(monkeypatch)
    model = nn.Sequential(nn.Conv2d(3, 40, 1), nn.Flatten(), nn.Linear(40 * 32 * 32, 300))
    x = torch.randn(8, 3, 32, 32)  # 2^22 // (8 x 40 x 1024) = 12 pullbacks
    gf.cam(model.eval(), "0", x, targets="all", autodiff="forward")
    assert sizes == [24, 16]  # 40 channels, in eval mode 40 directions


@pytest.mark.parametrize(
    ("method", "sum_channels", "coupled", "shape"),
    [
        ("gradcam", True, False, (1, 8, 1, 1)),
        ("xgradcam", False, False, (1, 8, 1, 1)),
        ("hirescam", True, False, (1, 1, 4, 4)),
        ("hirescam", False, False, (1, 8, 4, 4)),
        ("gradcam", True, True, (2, 8, 1, 1)),
    ],
)
def test_directions_reach_the_jvp_unexpanded(monkeypatch, method, sum_channels, coupled, shape):
    """A direction is handed to the jvp at the size it varies over ((1, C, 1, 1) for a
    channel; (B, ...) only in train mode) and broadcast at the layer, so nothing of the
    activation's size is held through the part before the layer; the maps are unchanged."""
    import gradcam_func._split as split_module

    seen = []
    jvp = torch.func.jvp

    def recorded(fn, primals, tangents):
        seen.extend(tuple(t.shape) for t in tangents)
        return jvp(fn, primals, tangents)

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 20),
    ).double()
    model.train(coupled)
    twin = copy.deepcopy(model)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    options = {"method": method, "sum_channels": sum_channels, "targets": "all"}
    monkeypatch.setattr(split_module.torch.func, "jvp", recorded)
    ours = gf.cam(model, "0", x, autodiff="forward", **options)
    monkeypatch.undo()
    assert seen and set(seen) == {shape}
    assert_matches(ours, gf.cam(twin, "0", x, autodiff="reverse", **options))


def test_reverse_when_asked_even_where_auto_would_go_forward(monkeypatch):
    """8 channels and 20 classes: "auto" takes forward mode (checked), but
    autodiff="reverse" never runs a jvp."""
    import gradcam_func._forward_mode as forward_mode

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 20)
    ).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert choose_mode("auto", "gradcam", 20, (2, 8, 4, 4), True, model, True, "cam") == "forward"
    expected = gf.cam(model, "0", x, targets="all", autodiff="forward")

    def no_jvp(*args, **kwargs):
        raise AssertionError("forward mode ran")

    monkeypatch.setattr(forward_mode, "forward_cams", no_jvp)
    assert_matches(gf.cam(model, "0", x, targets="all", autodiff="reverse"), expected)
    with pytest.raises(AssertionError, match="forward mode ran"):  # the spy works
        gf.cam(model, "0", x, targets="all", autodiff="forward")


def test_forward_mode_refuses_what_it_cannot_serve_and_says_why():
    """A list of layers, or channels not on axis 1: autodiff="forward" refuses with the
    reason, "auto" stays in reverse mode."""
    case = ZOO["plain_cnn"](torch.float64)
    x = case.inputs[0]
    why = re.escape(
        "autodiff='forward'): forward mode takes one layer whose activation is one Tensor "
        "(B, C, *S) of the batch, with channels on axis 1. Use autodiff='reverse' (or 'auto')."
    )
    for options in ({"layer": ["conv1", "conv2"]}, {"layer": "conv2", "channel_axis": -1}):
        with pytest.raises(gf.GradCamError, match=r"^cam\(\.\.\., method='gradcam', " + why + "$"):
            gf.cam(case.model, inputs=x, targets=[0, 1], autodiff="forward", **options)
    both_layers = gf.cam(case.model, ["conv1", "conv2"], x, targets=[0, 1])  # "auto"
    assert_matches(
        both_layers[1], gf.cam(case.model, "conv2", x, targets=[0, 1], autodiff="reverse")
    )


class HalfLayer(nn.Module):
    """A bfloat16 convolution before a float32 head: the output's tangents are float32."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1).to(torch.bfloat16)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x.to(torch.bfloat16))).float().mean((2, 3)))


def maps_by_hand(model, layer_name, x, score, method):
    """Grad-CAM, XGradCAM or HiResCAM (B, 1, H, W) from torch.autograd.grad at the layer,
    written out apart from the library (the papers' definitions)."""
    captured = []
    handle = model.get_submodule(layer_name).register_forward_hook(
        lambda module, inputs, out: captured.append(out)
    )
    try:
        output = model(x)
    finally:
        handle.remove()
    (grads,) = torch.autograd.grad(score(output).sum(), captured[0])
    acts = captured[0].detach()
    if method == "gradcam":
        weights = grads.mean((2, 3), keepdim=True)
    elif method == "xgradcam":
        weights = (grads * acts).sum((2, 3), keepdim=True) / (acts.sum((2, 3), keepdim=True) + 1e-7)
    else:  # hirescam: the gradient itself, position by position
        weights = grads
    return (weights * acts).sum(1, keepdim=True)


@pytest.mark.parametrize("method", FORWARD)
@pytest.mark.parametrize("whole", [True, False], ids=["bfloat16 model", "bfloat16 layer"])
def test_a_bfloat16_layer_gives_the_bfloat16_maps_of_autograd(method, whole):
    """Forward mode in bfloat16, a whole model or one layer before a float32 head: the
    maps keep the layer's dtype, are not taken for a model that mixes its examples, and
    equal the maps written out by hand from autograd on the same model, to bfloat16's
    precision. (Against float32 both modes differ by up to 4% of the maps' scale here,
    where the channels' terms cancel: bfloat16's arithmetic, not either mode's.)"""
    torch.manual_seed(0)
    if whole:
        case = ZOO["plain_cnn"](torch.bfloat16)
        model, layer, x = case.model, case.layer, case.inputs[0]
    else:
        model, x = HalfLayer(), torch.randn(3, 3, 8, 8)
        layer = model.conv
    layer_name = next(name for name, m in model.named_modules() if m is layer)
    scores = [lambda out: out[:, 0], lambda out: out[:, 2] - out[:, 0]]
    forward = gf.cam(model, layer, x, method=method, targets=scores, autodiff="forward")
    assert forward.dtype == torch.bfloat16
    expected = torch.stack(
        [maps_by_hand(model, layer_name, x, score, method) for score in scores]
    ).float()
    scale = expected.abs().max()
    assert scale > 1e-3
    tolerance = TOLERANCES[torch.bfloat16]  # bfloat16's 8 bits, atol relative to the scale
    torch.testing.assert_close(
        forward.float(), expected, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale
    )
