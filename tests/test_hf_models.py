"""Real architectures from HuggingFace ``transformers`` (tiny, random weights): Captum's
numbers at a block's output and at a layer input with other uses, many targets, train
mode, channels_last and bf16 autocast, called on the model as HuggingFace returns it."""

import copy

import pytest
import torch
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import LayerGradCam

import gradcam_func as gf
from conftest import assert_close, assert_matches, assert_not_zero
from hf_models import ARCHS, CONVOLUTIONAL, Logits, build

# bf16 keeps 8 bits of mantissa; the two computations round in different places.
# Stated tolerance: every entry within 3% of the reference's largest magnitude.
BF16_RELATIVE_TO_MAX = 0.03


def logit(k):
    def score(out):
        return out.logits[:, k]

    return score


def captum(model, layer, x, target, **options):
    result = LayerGradCam(Logits(model), model.get_submodule(layer)).attribute(x, target, **options)
    return result.detach()


def layer_of(name, where):
    return ARCHS[name].output_layer if where == "output" else ARCHS[name].input_layer


@pytest.mark.parametrize("where", ["output", "input"])
@pytest.mark.parametrize("name", ARCHS)
def test_equals_captum(name, where):
    model, x = build(name)
    layer = layer_of(name, where)
    inputs = where == "input"
    assert_matches(
        gf.grad_cam(model, layer, x, logit(1), attribute_to_layer_input=inputs),
        captum(model, layer, x, 1, attribute_to_layer_input=inputs),
    )


@pytest.mark.parametrize("where", ["output", "input"])
@pytest.mark.parametrize("name", ARCHS)
def test_targets_equal_captums_loop(name, where):
    model, x = build(name)
    layer = layer_of(name, where)
    inputs = where == "input"
    cams = gf.grad_cam(
        model, layer, x, targets=[logit(k) for k in (0, 2, 4)], attribute_to_layer_input=inputs
    )
    assert_matches(
        cams,
        torch.stack(
            [captum(model, layer, x, k, attribute_to_layer_input=inputs) for k in (0, 2, 4)]
        ),
    )
    cams, classes = gf.grad_cam(
        model,
        layer,
        x,
        attribute_to_layer_input=inputs,
        targets=gf.top_k(2, scores=lambda out: out.logits),
    )
    assert_matches(
        cams,
        torch.stack(
            [
                captum(model, layer, x, row.tolist(), attribute_to_layer_input=inputs)
                for row in classes
            ]
        ),
    )


@pytest.mark.parametrize("name", ARCHS)
def test_train_mode_equals_captum_and_updates_statistics_once(name):
    """Batch statistics, and dropout with the same seed (MobileNetV2's classifier)."""
    model, x = build(name)
    model.train()
    theirs, plain = copy.deepcopy(model), copy.deepcopy(model)
    torch.manual_seed(5)
    with torch.no_grad():
        plain(x)
    layer = ARCHS[name].output_layer
    torch.manual_seed(5)
    expected = captum(theirs, layer, x, 3)
    torch.manual_seed(5)
    assert_matches(gf.grad_cam(model, layer, x, logit(3)), expected)
    for (key, mine), (_, expected) in zip(
        model.named_buffers(), plain.named_buffers(), strict=True
    ):
        if expected.is_floating_point():
            assert_close(mine, expected)
        else:
            assert torch.equal(mine, expected), key


@pytest.mark.parametrize("name", CONVOLUTIONAL)
def test_channels_last_equals_captum(name):
    model, x = build(name)
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    for where in ("output", "input"):
        layer, inputs = layer_of(name, where), where == "input"
        assert_matches(
            gf.grad_cam(model, layer, x, logit(2), attribute_to_layer_input=inputs),
            captum(model, layer, x, 2, attribute_to_layer_input=inputs),
        )


@pytest.mark.parametrize("name", ARCHS)
def test_bf16_autocast_is_close_to_captum(name):
    model, x = build(name)
    layer = ARCHS[name].output_layer
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = captum(model, layer, x, 1).float()
        ours = gf.grad_cam(model, layer, x, logit(1)).float()
    assert_not_zero(expected)
    scale = expected.abs().max().item()
    torch.testing.assert_close(ours, expected, rtol=0, atol=BF16_RELATIVE_TO_MAX * scale)


# Token layers: the embedding dimensions as channels, the tokens as positions (a grid
# for images), against Captum's autograd gradients put through the formula by hand.
TOKEN_LAYERS = {
    "vit": ("vit.layers.0", dict(token_grid=(4, 4), prefix_tokens=1)),
    "swin": ("swin.encoder.layers.0.blocks.0.layernorm_after", dict(token_grid=(8, 8))),
    "bert": ("bert.encoder.layer.0", dict()),
}


def token_cam(acts, grads):
    """Grad-CAM over tokens, by hand: (B, T, D) -> (B, 1, T), one weight per dimension."""
    weights = grads.mean(1, keepdim=True)
    return (weights * acts).sum(-1)[:, None]


@pytest.mark.parametrize("name", TOKEN_LAYERS)
def test_token_layout_equals_the_formula_on_captums_gradients(name):
    model, x = build(name)
    layer, layout = TOKEN_LAYERS[name]
    grads, acts = compute_layer_gradients_and_eval(Logits(model), model.get_submodule(layer), x, 1)
    prefix = layout.get("prefix_tokens", 0)
    expected = token_cam(acts[0][:, prefix:].detach(), grads[0][:, prefix:].detach())
    if "token_grid" in layout:
        expected = expected.reshape(x.shape[0], 1, *layout["token_grid"])
    assert_matches(gf.cam(model, layer, x, logit(1), channel_axis=-1, **layout), expected)


def captured_input_gradient(model, layer, x, k):
    """Autograd by hand: the gradient of logit k w.r.t. the tensor the layer receives
    as its first argument (Captum's clone trick: the layer gets a clone, so every use
    of the original counts)."""
    captured = []

    def pre_hook(_, args, kwargs):
        captured.append(args[0])
        return (args[0].clone(),) + args[1:], kwargs

    handle = model.get_submodule(layer).register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        logits = model(x).logits
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[:, k].sum(), captured[0])
    return captured[0].detach(), grad


@pytest.mark.parametrize(
    "name, layer",
    [
        ("bert", "bert.encoder.layer.1"),
        ("vit", "vit.layers.1.attention"),
        ("swin", "swin.encoder.layers.1.blocks.0"),
    ],
)
def test_layers_called_with_none_and_keywords_equal_autograd_by_hand(name, layer):
    """These layers get None or keyword arguments beside their tensor, which Captum's
    hooks refuse; gradcam_func takes the layer's floating-point Tensors."""
    model, x = build(name)
    acts, grads = captured_input_gradient(model, layer, x, 2)
    expected = token_cam(acts, grads)
    assert_matches(
        gf.cam(model, layer, x, logit(2), attribute_to_layer_input=True, channel_axis=-1), expected
    )


def score_cam_by_loop(model, layer, x, k):
    """Score-CAM (the paper's convention), one masked image at a time, on logits."""
    acts = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _, __, out: acts.append(out.detach())
    )
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    maps = []
    with torch.no_grad():
        for b in range(len(x)):
            weights = []
            for a in acts[0][b]:
                up = torch.nn.functional.interpolate(
                    a[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False
                )
                span = up.max() - up.min()
                mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
                weights.append(model(x[b : b + 1] * mask[0]).logits.softmax(1)[0, k])
            w = torch.stack(weights)
            maps.append((w.view(-1, 1, 1) * acts[0][b]).sum(0, keepdim=True))
    return torch.stack(maps)


def ablation_cam_by_loop(model, layer, x, k):
    """Ablation-CAM (the paper's convention), one ablated channel at a time."""
    module = model.get_submodule(layer)
    with torch.no_grad():
        acts = []
        handle = module.register_forward_hook(lambda _, __, out: acts.append(out))
        try:
            y = model(x).logits[:, k]
        finally:
            handle.remove()
        maps = []
        for b in range(len(x)):
            weights = []
            for c in range(acts[0].shape[1]):

                def ablate(_, __, out, c=c):
                    out = out.clone()
                    out[:, c] = 0
                    return out

                handle = module.register_forward_hook(ablate)
                try:
                    weights.append((y[b] - model(x[b : b + 1]).logits[0, k]) / y[b])
                finally:
                    handle.remove()
            w = torch.stack(weights)
            maps.append((w.view(-1, 1, 1) * acts[0][b]).sum(0, keepdim=True))
    return torch.stack(maps)


@pytest.mark.parametrize("name", ["resnet", "convnext"])
def test_gradient_free_methods_equal_their_loops(name):
    model, x = build(name)
    layer = ARCHS[name].output_layer

    def probability(out):  # the paper's score; a callable target is scored by its value
        return out.logits.softmax(1)[:, 2]

    assert_matches(
        gf.cam(model, layer, x, probability, method="scorecam", batch_size=16),
        score_cam_by_loop(model, layer, x, 2),
    )
    assert_matches(
        gf.cam(model, layer, x, logit(2), method="ablationcam", batch_size=8),
        ablation_cam_by_loop(model, layer, x, 2),
    )
