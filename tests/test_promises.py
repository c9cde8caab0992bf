"""Options and documented promises, each against a reference written here by hand:
``cam``'s ``relu`` and ``sum_channels``, the JAX path's ``sum_channels``, ``interpolate``'s
"nearest-exact", ``explain_dataset``'s ``relu`` (and ``--relu``), the resume check over
buffers, the probe's RNG restore, and torch's no-batching-rule warning kept from the user."""

import subprocess
import sys

import pytest
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from torch import nn

import gradcam_func as gf
from conftest import assert_matches
from dataset_job import Data, make_model
from gradcam_func.__main__ import main as cli


def conv_net():
    torch.manual_seed(3)
    return (
        nn.Sequential(
            nn.Conv2d(3, 5, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(5, 4, 3),
            nn.Tanh(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 3),
        )
        .double()
        .eval()
    )


def acts_and_grads(model, layer, x, k):
    """The layer's output and d out[:, k].sum() / d output, by a hook and autograd."""
    kept = []
    handle = model[layer].register_forward_hook(lambda m, i, o: kept.append(o))
    out = model(x)
    handle.remove()
    (grads,) = torch.autograd.grad(out[:, k].sum(), kept[0])
    return kept[0].detach(), grads


# method -> per-channel map (B, C, *S) from the activation A and its gradient g
PER_CHANNEL = {
    "gradcam": lambda a, g: g.mean((2, 3), keepdim=True) * a,
    "hirescam": lambda a, g: g * a,
    "layercam": lambda a, g: g.clamp(min=0) * a,
}


@pytest.mark.parametrize("method", PER_CHANNEL)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("sum_channels", [True, False])
def test_cam_relu_and_sum_channels_equal_the_formula_on_autograd(method, relu, sum_channels):
    model, x = conv_net(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    a, g = acts_and_grads(model, 2, x, 1)
    expected = PER_CHANNEL[method](a, g)
    if sum_channels:
        expected = expected.sum(1, keepdim=True)
    if relu:
        expected = expected.clamp(min=0)
        assert (expected == 0).any() and (expected > 0).any()  # relu changes something
    cam = gf.cam(model, "2", x, 1, method=method, relu=relu, sum_channels=sum_channels)
    assert_matches(cam, expected)


def test_jax_sum_channels_equals_the_formula_on_jax_grad():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from gradcam_func import jax as gj

    weight = jax.random.normal(jax.random.PRNGKey(0), (4, 3))

    def trunk(x):  # (B, 4, 5, 5)
        return jnp.tanh(x)

    def head(acts):  # (B, 3)
        return jnp.sin(acts).mean((2, 3)) @ weight

    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 5, 5))
    acts = trunk(x)
    grads = jax.grad(lambda a: head(a)[:, 2].sum())(acts)
    expected = grads.mean((2, 3), keepdims=True) * acts
    per_channel = gj.grad_cam(trunk, head, x, 2, sum_channels=False)
    summed = gj.grad_cam(trunk, head, x, 2)
    assert_matches(torch.tensor(per_channel.tolist()), torch.tensor(expected.tolist()))
    assert_matches(
        torch.tensor(summed.tolist()), torch.tensor(expected.sum(1, keepdims=True).tolist())
    )


@pytest.mark.parametrize(
    "size_in, size_out", [((4, 6), (10, 9)), ((10, 9), (4, 6)), ((5, 7), (5, 7))]
)
def test_nearest_exact_picks_the_pixel_under_each_output_centre(size_in, size_out):
    cams = torch.randn(2, 1, *size_in)
    expected = torch.empty(2, 1, *size_out)
    for i in range(size_out[0]):
        for j in range(size_out[1]):
            source_i = min(int((i + 0.5) * size_in[0] / size_out[0]), size_in[0] - 1)
            source_j = min(int((j + 0.5) * size_in[1] / size_out[1]), size_in[1] - 1)
            expected[:, :, i, j] = cams[:, :, source_i, source_j]
    assert torch.equal(gf.interpolate(cams, size_out, mode="nearest-exact"), expected)


@pytest.mark.parametrize("targets", [[1], gf.top_k(2)], ids=["classes", "top_k"])
def test_explain_dataset_relu_zeroes_exactly_the_negative_evidence(tmp_path, targets):
    data = Data()
    gf.explain_dataset(
        make_model(),
        "3",
        data,
        targets=targets,
        out=tmp_path,
        batch_size=4,
        shard_size=8,
        dtype=torch.float32,
        relu=True,
        progress=False,
    )
    plain = gf.grad_cam(make_model(), "3", data.images, targets=targets)
    plain = (plain if isinstance(targets, list) else plain[0]).transpose(0, 1)  # (N, K, 1, H, W)
    assert (plain < 0).any() and (plain > 0).any()
    assert_matches(gf.load_cams(tmp_path), plain.clamp(min=0))


def test_the_cli_relu_flag_reaches_the_cams(tmp_path):
    assert (
        cli(
            [
                "explain-dataset",
                "--model",
                "dataset_job:make_model",
                "--layer",
                "3",
                "--targets",
                "1",
                "--out",
                str(tmp_path),
                "--batch-size",
                "4",
                "--dtype",
                "float32",
                "--data",
                "dataset_job:Data",
                "--relu",
                "--no-progress",
            ]
        )
        == 0
    )
    plain = gf.grad_cam(make_model(), "3", Data().images, 1)[:, None]
    assert_matches(gf.load_cams(tmp_path), plain.clamp(min=0))


def test_a_resumed_run_notices_changed_buffers(tmp_path):
    def model():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 4),
        ).eval()

    options = dict(targets=[1], out=tmp_path, batch_size=4, shard_size=8, progress=False)
    gf.explain_dataset(model(), "3", Data(), **options)
    other = model()
    other[1].running_mean.add_(0.5)  # the parameters are unchanged
    with pytest.raises(
        gf.GradCamError,
        match=r"\(model: recorded '[0-9a-f]+', now "
        r"'[0-9a-f]+'\)",
    ):
        gf.explain_dataset(other, "3", Data(), **options)
    assert gf.explain_dataset(model(), "3", Data(), **options)["shards_resumed"] == 7


class NoMeta(nn.Module):
    """Dropout before the layer, and a forward that reads a value (so the shape probe
    cannot run on the meta device and runs the real trunk, dropout included)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        scale = 1.0 + 0.0 * float(x.detach().abs().mean())
        h = torch.tanh(self.conv(self.drop(x * scale)))
        return self.fc(h.mean((2, 3)))


def test_the_probe_leaves_the_random_stream_as_one_forward_does():
    x = torch.randn(2, 3, 6, 6)
    model = NoMeta().train()
    theirs = CaptumLayerGradCam(model, model.conv)
    torch.manual_seed(11)
    expected = theirs.attribute(x, 1).detach()
    after_captum = torch.rand(4)
    fresh = NoMeta().train()  # a new model: the probe has not cached its shape
    torch.manual_seed(11)
    ours = gf.grad_cam(fresh, "conv", x, 1)
    assert_matches(ours, expected)
    assert torch.equal(torch.rand(4), after_captum)


class Watched(nn.Module):
    """Parameters and BatchNorm buffers, and a record of the devices its forward sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.devices = []

    def forward(self, x):
        self.devices.append(x.device.type)
        return self.fc(self.norm(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("at_input", [False, True])
def test_a_model_that_runs_on_meta_is_probed_there_and_run_once_for_real(at_input):
    model, options = Watched().eval(), dict(attribute_to_layer_input=at_input)
    gf.grad_cam(model, "norm", torch.randn(2, 3, 5, 5), [0, 2], **options)
    assert model.devices == ["meta", "cpu"]
    gf.grad_cam(model, "norm", torch.randn(2, 3, 5, 5), 1, **options)  # the shape is cached
    assert model.devices == ["meta", "cpu", "cpu"]


# torch warns once per process when an op without a batching rule runs under vmap, so
# each side runs in a fresh process.
_VMAP_WARNING = """
import warnings, torch
import gradcam_func as gf
from gradcam_func.testing import families
model = families.token_transformer(0).model.eval()
x = torch.randn(2, 5, 4, dtype=torch.float64)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    {call}
print(sum("performance drop" in str(w.message) for w in seen))
"""


def _vmap_warnings(call):
    code = _VMAP_WARNING.format(call=call)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[-1])


def test_the_no_batching_rule_warning_does_not_reach_the_user():
    # the head's fused encoder layer has no batching rule: plain vmap over it warns
    assert (
        _vmap_warnings(
            "torch.func.vmap(lambda a: model.head(model.block(a).mean(1)))"
            "(model.embed(x)[None].repeat(3, 1, 1, 1))"
        )
        == 1
    )
    assert (
        _vmap_warnings('gf.cam(model, "embed", x, 1, method="ablationcam", channel_axis=-1)') == 0
    )
