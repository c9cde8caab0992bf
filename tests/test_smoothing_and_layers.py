"""Smoothing (noise, test-time augmentation), several layers in one call, and fusion,
against the same computations written as loops."""

import pytest
import torch
import torch.nn.functional as F

import gradcam_func as gf
from conftest import assert_close, assert_matches, assert_not_zero
from zoo import ZOO


def case():
    c = ZOO["plain_cnn"](torch.float64)
    return c.model, c.layer, c.inputs[0]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
def test_smooth_cam_is_the_mean_over_the_same_noisy_copies(method):
    model, layer, x = case()
    samples, level = 4, 0.2
    generator = torch.Generator().manual_seed(3)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    noisy = [
        x + level * span * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        for _ in range(samples)
    ]
    expected = torch.stack([gf.cam(model, layer, n, [1, 2, 0], method=method) for n in noisy]).mean(
        0
    )
    ours = gf.smooth_cam(
        model,
        layer,
        x,
        [1, 2, 0],
        method=method,
        samples=samples,
        noise_level=level,
        generator=torch.Generator().manual_seed(3),
    )
    assert_matches(ours, expected)


def test_smooth_cam_with_an_absolute_stdev_and_targets():
    model, layer, x = case()
    generator = torch.Generator().manual_seed(0)
    noisy = [x + 0.3 * torch.randn(x.shape, generator=generator, dtype=x.dtype) for _ in range(3)]
    expected = torch.stack([gf.cam(model, layer, n, targets=[0, 2]) for n in noisy]).mean(0)
    ours = gf.smooth_cam(
        model,
        layer,
        x,
        targets=[0, 2],
        samples=3,
        stdev=0.3,
        generator=torch.Generator().manual_seed(0),
    )
    assert_matches(ours, expected)


def test_augmented_cam_flips_the_maps_back():
    model, layer, x = case()
    expected = []
    for flip in (False, True):
        for scale in (0.9, 1.0, 1.1):
            image = (x.flip(-1) if flip else x) * scale
            cam = gf.cam(model, layer, image, 1, method="layercam")
            expected.append(cam.flip(-1) if flip else cam)
    assert_matches(
        gf.augmented_cam(model, layer, x, 1, method="layercam"), torch.stack(expected).mean(0)
    )


def test_smoothing_refuses_top_k_and_bad_samples():
    model, layer, x = case()
    with pytest.raises(gf.GradCamError, match=r"targets=top_k\(k\)\): pass the classes"):
        gf.smooth_cam(model, layer, x, targets=gf.top_k(2))
    with pytest.raises(gf.GradCamError, match=r"samples=0\): expected a positive int"):
        gf.smooth_cam(model, layer, x, 1, samples=0)


class Counter(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_several_layers_equal_one_call_each_from_one_forward():
    c = ZOO["plain_cnn"](torch.float64)
    model, x = c.model, c.inputs[0]
    targets = [0, 2, lambda out: out[:, 1] - out[:, 3]]
    for method in ("gradcam", "hirescam", "gradcam++"):
        deep, shallow = gf.cam(model, ["conv2", "conv1"], x, targets=targets, method=method)
        assert_close(deep, gf.cam(model, "conv2", x, targets=targets, method=method))
        assert_close(shallow, gf.cam(model, "conv1", x, targets=targets, method=method))
    gf.cam(model, ["conv2", "conv1"], x, 1)  # probes once
    model.fc = Counter(model.fc)
    gf.cam(model, ["conv2", "conv1"], x, targets=targets)
    assert model.fc.calls == 1


def test_several_layers_with_layer_vjp_and_layer_inputs():
    c = ZOO["residual"](torch.float64)
    output, acts, pullback = gf.layer_vjp(
        c.model, ["conv", "stem"], c.inputs[0], attribute_to_layer_input=True
    )
    grads = pullback(torch.eye(4, dtype=torch.float64)[[1, 2]])
    for layer, act, grad in zip(["conv", "stem"], acts, grads, strict=True):
        _, one_act, one_pullback = gf.layer_vjp(
            c.model, layer, c.inputs[0], attribute_to_layer_input=True
        )
        assert_close(act, one_act)
        assert_close(grad, one_pullback(torch.eye(4, dtype=torch.float64)[[1, 2]]))


def test_gradient_free_methods_take_a_list_of_layers_one_at_a_time():
    c = ZOO["plain_cnn"](torch.float64)
    maps = gf.cam(c.model, ["conv2", "conv1"], c.inputs[0], 1, method="ablationcam")
    assert_close(maps[1], gf.cam(c.model, "conv1", c.inputs[0], 1, method="ablationcam"))


def test_gradient_free_methods_at_several_layers_return_top_ks_classes_once():
    c = ZOO["plain_cnn"](torch.float64)
    x = c.inputs[0]
    maps, classes = gf.cam(c.model, ["conv2", "conv1"], x, targets=gf.top_k(2), method="scorecam")
    for got, layer in zip(maps, ["conv2", "conv1"], strict=True):
        one, its_classes = gf.cam(c.model, layer, x, targets=gf.top_k(2), method="scorecam")
        assert_not_zero(one)
        assert_close(got, one)
        assert torch.equal(classes, its_classes)
    assert torch.equal(classes, c.model(x).topk(2, dim=1).indices.T)


def fuse_by_hand(maps, size, how):
    scaled = []
    for m in maps:
        up = F.interpolate(m.clamp_min(0), size=size, mode="bilinear", align_corners=False)
        low = up.amin((2, 3), keepdim=True)
        span = up.amax((2, 3), keepdim=True) - low
        scaled.append(torch.where(span > 1e-12, (up - low) / span.where(span > 1e-12, 1), 0))
    stacked = torch.stack(scaled)
    if how == "max":
        return stacked.amax(0)
    mean = stacked.mean(0)
    low = mean.amin((2, 3), keepdim=True)
    span = mean.amax((2, 3), keepdim=True) - low
    return torch.where(span > 1e-12, (mean - low) / span.where(span > 1e-12, 1), 0)


@pytest.mark.parametrize("how", ["mean", "max"])
def test_fuse_layers(how):
    torch.manual_seed(0)
    maps = [
        torch.randn(2, 1, 4, 4, dtype=torch.float64),
        torch.randn(2, 1, 8, 8, dtype=torch.float64),
    ]
    assert_matches(gf.fuse_layers(maps, (16, 16), how=how), fuse_by_hand(maps, (16, 16), how))
    stacked = [m[None].expand(3, *m.shape) for m in maps]
    assert gf.fuse_layers(stacked, (16, 16), how=how).shape == (3, 2, 1, 16, 16)


def test_bad_layer_lists_and_fusion():
    c = ZOO["plain_cnn"](torch.float64)
    with pytest.raises(gf.GradCamError, match=r"layer=\[\.\.\.\]\): a layer is listed twice"):
        gf.grad_cam(c.model, ["conv2", "conv2"], c.inputs[0], 1)
    with pytest.raises(gf.GradCamError, match=r"layer=\[\]\): expected at least one layer"):
        gf.grad_cam(c.model, [], c.inputs[0], 1)
    with pytest.raises(gf.GradCamError, match=r"how='sum'\): expected 'mean' or 'max'"):
        gf.fuse_layers([torch.zeros(1, 1, 2, 2)], (4, 4), how="sum")
    with pytest.raises(
        gf.GradCamError,
        match=r"size=4\): expected the spatial size as a "
        r"tuple",
    ):
        gf.fuse_layers([torch.zeros(1, 1, 2, 2)], 4)
