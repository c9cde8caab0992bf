"""The JAX path's forward mode (``autodiff=``): Grad-CAM's weights as jvps, one per
channel, equal to Captum's numbers on the torch twins and to reverse mode, for every
entry point, target form and option; examples that interact (BatchNorm on the batch's
statistics) get directions of their own; a model that mixes examples otherwise is caught."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam

import gradcam_func.jax as gj
from gradcam_func._jax_modules import _equinox_marked
from conftest import TOLERANCES, assert_arrays_close, assert_not_zero

eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")
fnn = pytest.importorskip("flax.linen")

from test_jax_modules import (  # noqa: E402  (after the optional imports they need)
    Batched,
    EqxBN,
    EqxCNN,
    EqxResidual,
    EqxViT,
    LinenCNN,
    NnxBN,
    NnxCNN,
    NnxResidual,
    NnxViT,
    TorchBN,
    TorchResidual,
    TorchViT,
    linen_variables,
    torch_twin,
    weights,
)


def contrast(out):
    return out[:, 1] - 0.5 * out[:, 2] ** 2  # not linear in the output


def captum_maps(model, layer, x, targets, **options):
    """(K, B, ...) of Captum's LayerGradCam, one call per target, as NumPy."""
    maps = []
    for target in targets:
        if callable(target):
            score, index = (lambda inputs, t=target: t(model(inputs))), None
        else:
            score, index = model, target
        attribution = LayerGradCam(score, model.get_submodule(layer)).attribute(x, index, **options)
        assert_not_zero(attribution)
        maps.append(attribution.detach().numpy())
    return np.stack(maps)


@pytest.fixture(scope="module")
def cnn():
    model = torch_twin()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    return model, x, weights(model)


def module_call(kind, w, x, **options):
    """grad_cam_module on the twin of ``kind``, channels-first results (K, B, C', H, W)."""
    xs = jnp.asarray(x.numpy())
    if kind == "equinox":
        return gj.grad_cam_module(EqxCNN(w), "convs.1", xs, **options)
    channels_last = xs.transpose(0, 2, 3, 1)
    if kind == "nnx":
        cams = gj.grad_cam_module(NnxCNN(w), "conv2", channels_last, **options)
    else:
        cams = gj.grad_cam_module(
            LinenCNN(), "conv2", channels_last, variables=linen_variables(w), **options
        )
    return np.moveaxis(np.asarray(cams), -1, 2)


TORCH_TARGETS = [0, 2, [1, 2, 0], contrast]


def jax_targets():
    return [0, (2,), jnp.array([1, 2, 0]), contrast]


@pytest.mark.parametrize(
    "options",
    [dict(), dict(relu=True), dict(sum_channels=False), dict(chunk_size=2)],
    ids=lambda o: "-".join(o) or "default",
)
@pytest.mark.parametrize("kind", ["equinox", "nnx", "linen"])
def test_forward_mode_equals_captum_for_every_target_form(cnn, kind, options):
    model, x, w = cnn
    captum_options = {}
    if "relu" in options:
        captum_options["relu_attributions"] = True
    if "sum_channels" in options:
        captum_options["attr_dim_summation"] = False
    expected = captum_maps(model, "conv2", x, TORCH_TARGETS, **captum_options)
    forward = module_call(kind, w, x, targets=jax_targets(), autodiff="forward", **options)
    assert_arrays_close(forward, expected, torch.float32)
    reverse = module_call(kind, w, x, targets=jax_targets(), autodiff="reverse", **options)
    assert_arrays_close(forward, reverse, torch.float32)


def test_forward_mode_one_target_top_k_and_the_hand_split_and_flax_entry_points(cnn):
    model, x, w = cnn
    xs = jnp.asarray(x.numpy())
    expected = captum_maps(model, "conv2", x, [1])[0]
    single = gj.grad_cam_module(EqxCNN(w), "convs.1", xs, 1, autodiff="forward")
    assert_arrays_close(single, expected, torch.float32)

    cams, classes = gj.grad_cam_module(
        EqxCNN(w), "convs.1", xs, targets=gj.top_k(2), autodiff="forward"
    )
    best = model(x).argsort(1, descending=True)[:, :2].T.numpy()
    np.testing.assert_array_equal(np.asarray(classes), best)
    for k in range(2):
        per_example = [
            captum_maps(model, "conv2", x[b : b + 1], [int(best[k, b])])[0, 0] for b in range(3)
        ]
        assert_arrays_close(cams[k], np.stack(per_example), torch.float32)

    # the hand split: trunk up to conv2's output, head after it, channels-first
    eqx_model = EqxCNN(w)
    trunk = jax.vmap(lambda e: eqx_model.convs[1](jax.nn.relu(eqx_model.convs[0](e))))
    head = jax.vmap(lambda a: eqx_model.fc(jax.nn.relu(a).mean((1, 2))))
    split = gj.grad_cam(trunk, head, xs, targets=jax_targets(), autodiff="forward")
    assert_arrays_close(split, captum_maps(model, "conv2", x, TORCH_TARGETS), torch.float32)

    flax_cams = gj.grad_cam_flax(
        LinenCNN(),
        linen_variables(w),
        xs.transpose(0, 2, 3, 1),
        "conv2",
        targets=jax_targets(),
        autodiff="forward",
    )
    assert_arrays_close(
        np.moveaxis(np.asarray(flax_cams), -1, 2),
        captum_maps(model, "conv2", x, TORCH_TARGETS),
        torch.float32,
    )


@pytest.mark.parametrize("per_example", [True, False])
def test_forward_mode_at_the_layer_input_counts_every_use(per_example):
    """conv2's input is also the shortcut: the jvp perturbs the array where it is made."""
    torch.manual_seed(3)
    model = TorchResidual().eval()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    w = weights(model)
    expected = captum_maps(model, "conv2", x, [0, 2], attribute_to_layer_input=True)
    xs = jnp.asarray(x.numpy())
    options = dict(targets=[0, 2], attribute_to_layer_input=True, autodiff="forward")
    if per_example:
        ours = gj.grad_cam_module(EqxResidual(w), "conv2", xs, **options)
    else:  # a model that vmaps itself over the batch, called on the whole batch
        ours = gj.grad_cam_module(
            Batched(EqxResidual(w)), "inner.conv2", xs, per_example=False, **options
        )
    assert_arrays_close(ours, expected, torch.float32)
    nnx_cams = gj.grad_cam_module(NnxResidual(w), "conv2", xs.transpose(0, 2, 3, 1), **options)
    assert_arrays_close(nnx_cams, expected.transpose(0, 1, 3, 4, 2), torch.float32)


class Mix(torch.nn.Module):
    """A channel mix written as a matrix product: (O, C) @ (B, C, H, W) -> (B, O, H, W)."""

    def __init__(self, c, o):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(o, c) / c**0.5)

    def forward(self, x):
        return torch.einsum("oc,bchw->bohw", self.weight, x)


class TorchMix(torch.nn.Module):
    """conv, the mix, then a 1 x 1 gate whose input is also the shortcut."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.mix = Mix(4, 5)
        self.gate = torch.nn.Conv2d(5, 5, 1)
        self.fc = torch.nn.Linear(5, 3)

    def forward(self, x):
        m = self.mix(torch.relu(self.conv(x)))
        return self.fc((torch.relu(self.gate(m)) + m).mean((2, 3)))


class EqxMatMul(eqx.Module):
    weight: jax.Array

    def __call__(self, x):  # (C, H, W) -> (O, H, W); vmapped, the batch axis comes second
        return jnp.tensordot(self.weight, x, axes=1)


class EqxMix(eqx.Module):
    conv: eqx.nn.Conv2d
    mix: EqxMatMul
    gate: eqx.nn.Conv2d
    fc: eqx.nn.Linear

    def __init__(self, w):
        key = jax.random.PRNGKey(0)

        def conv(name, i, o, size, padding):
            return eqx.tree_at(
                lambda c: (c.weight, c.bias),
                eqx.nn.Conv2d(i, o, size, padding=padding, key=key),
                (jnp.asarray(w[f"{name}.weight"]), jnp.asarray(w[f"{name}.bias"])[:, None, None]),
            )

        self.conv, self.gate = conv("conv", 3, 4, 3, 1), conv("gate", 5, 5, 1, 0)
        self.mix = EqxMatMul(jnp.asarray(w["mix.weight"]))
        self.fc = eqx.tree_at(
            lambda f: (f.weight, f.bias),
            eqx.nn.Linear(5, 3, key=key),
            (jnp.asarray(w["fc.weight"]), jnp.asarray(w["fc.bias"])),
        )

    def __call__(self, x):
        m = self.mix(jax.nn.relu(self.conv(x)))
        return self.fc((jax.nn.relu(self.gate(m)) + m).mean((1, 2)))


@pytest.mark.parametrize("layer, at_input", [("mix", False), ("gate", True)])
@pytest.mark.parametrize("autodiff", ["forward", "reverse"])
def test_a_layer_array_whose_batch_axis_is_not_first(layer, at_input, autodiff):
    """Vmapped per example, ``W @ x`` leaves the batch axis second in the traced model:
    the gradients are read, and forward mode's tangents laid, with that axis moved."""
    torch.manual_seed(5)
    model = TorchMix().eval()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    targets = [0, [1, 2, 0], contrast]
    expected = captum_maps(model, layer, x, targets, attribute_to_layer_input=at_input)
    jax_targets = [0, jnp.array([1, 2, 0]), lambda out: out[:, 1] - 0.5 * out[:, 2] ** 2]
    eqx_model, xs = EqxMix(weights(model)), jnp.asarray(x.numpy())
    forward = _equinox_marked(eqx_model, (layer,), layer, True, at_input, None, "test")
    assert "batch_axes=(1,)" in str(jax.make_jaxpr(forward)(xs))  # the case this test is for
    ours = gj.grad_cam_module(
        eqx_model,
        layer,
        xs,
        targets=jax_targets,
        attribute_to_layer_input=at_input,
        autodiff=autodiff,
    )
    assert_arrays_close(ours, expected, torch.float32)


@pytest.mark.parametrize("layer, at_input", [("norm2", False), ("mlp1", False), ("norm2", True)])
def test_forward_mode_on_token_layers_laid_out_by_nested_vmaps(layer, at_input):
    """EqxViT runs its layers vmapped over tokens inside the vmap over examples: the
    tangent is laid back out as the traced model holds the array."""
    torch.manual_seed(7)
    model = TorchViT().eval()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(8))
    w = weights(model)
    expected = captum_maps(model, layer, x, [1, 2], attribute_to_layer_input=at_input)
    xs = jnp.asarray(x.numpy())
    options = dict(targets=[1, 2], channel_axis=1, attribute_to_layer_input=at_input)
    for twin, inputs in ((EqxViT(w), xs), (NnxViT(w), xs.transpose(0, 2, 3, 1))):
        ours = gj.grad_cam_module(twin, layer, inputs, autodiff="forward", **options)
        assert_arrays_close(ours, expected, torch.float32)


def bn_twins():
    """TorchBN in train mode and its NNX and Equinox twins normalizing by the batch."""
    torch.manual_seed(5)
    model = TorchBN()
    with torch.no_grad():
        model.bn.weight.uniform_(0.5, 1.5)
    model.train()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    w = weights(model)
    nnx_model = NnxBN(w)
    nnx_model.train()
    eqx_model, state = eqx.nn.make_with_state(EqxBN)(w)
    return model, x, nnx_model, eqx.nn.inference_mode(eqx_model, False), state


def test_batch_statistics_give_each_example_its_own_directions():
    """At conv1, before a BatchNorm on the batch's statistics, a channel's offset in one
    example moves every example's score: one direction per (example, channel), as
    Captum's gradient of the batch's summed scores sees it."""
    model, x, nnx_model, eqx_model, state = bn_twins()
    plain = NnxBN(weights(model))  # before Captum's train-mode forwards move torch's
    plain.train()
    expected = captum_maps(model, "conv1", x, [0, 2, contrast])
    xs = jnp.asarray(x.numpy())
    targets = [0, 2, contrast]
    ours = gj.grad_cam_module(
        nnx_model, "conv1", xs.transpose(0, 2, 3, 1), targets=targets, autodiff="forward"
    )
    assert_arrays_close(ours, expected.transpose(0, 1, 3, 4, 2), torch.float32)
    plain(xs.transpose(0, 2, 3, 1))  # the statistics move once, as after one forward
    for a, b in zip(
        jax.tree_util.tree_leaves(nnx.state(nnx_model)),
        jax.tree_util.tree_leaves(nnx.state(plain)),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    ours = gj.grad_cam_module(
        eqx_model, "conv1", xs, targets=targets, state=state, autodiff="forward"
    )
    assert_arrays_close(ours, expected, torch.float32)
    # the directions per example matter here: in eval mode the maps differ
    model.eval()
    assert not np.allclose(captum_maps(model, "conv1", x, [0]), expected[:1], atol=1e-4)


def mixing_split(cnn, mix, scale=1.0):
    """The Equinox CNN split at its second convolution, with a head whose scores, times
    ``scale``, get ``mix`` times the batch's mean score added: -> trunk, head, inputs."""
    _, x, w = cnn
    eqx_model = EqxCNN(w)
    trunk = jax.vmap(lambda e: eqx_model.convs[1](jax.nn.relu(eqx_model.convs[0](e))))

    def head(a):
        out = jax.vmap(lambda a: eqx_model.fc(jax.nn.relu(a).mean((1, 2))))(a)
        return scale * (out + mix * out.mean(0, keepdims=True))

    return trunk, head, jnp.asarray(x.numpy())


def test_a_model_that_mixes_examples_otherwise_is_caught(cnn):
    """A head that adds half the batch's mean score mixes examples without a BatchNorm:
    forward mode's first map is checked against reverse mode's. An explicit "forward"
    is refused; "auto" falls back to reverse mode."""
    trunk, head, xs = mixing_split(cnn, 0.5)
    with pytest.raises(
        gj.GradCamError,
        match=r"^grad_cam\(\.\.\., autodiff='forward'\): the model mixes the examples of the "
        r"batch \(the first target's map differs from reverse mode's\), so one direction per "
        r"channel cannot serve every example\. Use autodiff='reverse'\.$",
    ):
        gj.grad_cam(trunk, head, xs, targets=[0, 1], autodiff="forward")
    many = [0, 1, 2] * 3  # more targets than the 5 channels: "auto" would go forward
    reverse = gj.grad_cam(trunk, head, xs, targets=many, autodiff="reverse")
    assert_not_zero(torch.from_numpy(np.array(reverse)))  # a writable copy
    assert_arrays_close(gj.grad_cam(trunk, head, xs, targets=many), reverse, torch.float32)


def test_a_weak_mix_of_examples_in_tiny_scores_is_caught(cnn):
    """Scores of order 1e-6 with 0.3% of the batch's mean added: forward mode's first map
    is off by under 0.1% of the map's largest magnitude, within the rtol of 1e-3, and is
    refused by the atol, a tenth of that rtol times that magnitude however small."""
    trunk, head, xs = mixing_split(cnn, 0.003, scale=1e-6)
    reverse = np.asarray(gj.grad_cam(trunk, head, xs, targets=[0, 1], autodiff="reverse"))
    assert 1e-10 < np.abs(reverse).max() < 1e-8
    with pytest.raises(gj.GradCamError, match=r"the model mixes the examples of the batch"):
        gj.grad_cam(trunk, head, xs, targets=[0, 1], autodiff="forward")


def test_auto_goes_forward_when_the_directions_are_fewer_than_the_targets(cnn, monkeypatch):
    _, x, w = cnn
    calls = []
    forward_cams = gj._forward_cams

    def spy(*args):
        calls.append(len(args[2]))  # the targets' cotangents
        return forward_cams(*args)

    monkeypatch.setattr(gj, "_forward_cams", spy)
    xs = jnp.asarray(x.numpy())
    model = EqxCNN(w)  # conv2 has 5 channels: 5 directions
    gj.grad_cam_module(model, "convs.1", xs, targets=[0, 1, 2, 0, 1])
    assert calls == []
    gj.grad_cam_module(model, "convs.1", xs, targets=[0, 1, 2, 0, 1, 2])
    assert calls == [6]
    gj.grad_cam_module(model, "convs.1", xs, targets=[0, 1, 2, 0, 1, 2], autodiff="reverse")
    assert calls == [6]
    jitted = jax.jit(lambda x: gj.grad_cam_module(model, "convs.1", x, targets=[0, 1, 2] * 2))
    jitted(xs)  # under jit "auto" stays in reverse mode: values cannot be checked there
    assert calls == [6]
    _, bx, nnx_model, _, _ = bn_twins()  # 4 channels x 3 examples: 12 directions
    bxs = jnp.asarray(bx.numpy().transpose(0, 2, 3, 1))
    gj.grad_cam_module(nnx_model, "conv1", bxs, targets=[0, 1, 2] * 4)
    assert calls == [6]
    gj.grad_cam_module(nnx_model, "conv1", bxs, targets=[0, 1, 2] * 4 + [0])
    assert calls == [6, 13]
    with pytest.raises(
        gj.GradCamError,
        match=r"^grad_cam_module\(\.\.\., autodiff='backward'\): expected 'auto', 'reverse' "
        r"or 'forward'\.$",
    ):
        gj.grad_cam_module(model, "convs.1", xs, 0, autodiff="backward")


def test_forward_mode_under_jit_vmap_and_grad(cnn):
    model, x, w = cnn
    eqx_model = EqxCNN(w)
    xs = jnp.asarray(x.numpy())
    eager = gj.grad_cam_module(eqx_model, "convs.1", xs, targets=[0, 2], autodiff="forward")
    jitted = jax.jit(
        lambda x: gj.grad_cam_module(eqx_model, "convs.1", x, targets=[0, 2], autodiff="forward")
    )(xs)
    assert_arrays_close(jitted, captum_maps(model, "conv2", x, [0, 2]), torch.float32)
    assert_arrays_close(jitted, eager, torch.float32)

    groups = xs.reshape(3, 1, 3, 6, 6)  # vmap over groups of one example
    mapped = jax.vmap(
        lambda g: gj.grad_cam_module(eqx_model, "convs.1", g, targets=[0, 2], autodiff="forward")
    )(groups)
    looped = np.stack([gj.grad_cam_module(eqx_model, "convs.1", g, targets=[0, 2]) for g in groups])
    assert_arrays_close(mapped, looped, torch.float32)

    def loss(weight, autodiff):  # forward-over-reverse: the jvps differentiated
        m = eqx.tree_at(lambda m: m.fc.weight, eqx_model, weight)
        cams = gj.grad_cam_module(m, "convs.1", xs, targets=[1, 2], autodiff=autodiff)
        return (cams**2).sum()

    weight = eqx_model.fc.weight
    analytic = jax.grad(loss)(weight, "forward")
    direction = jax.random.normal(jax.random.PRNGKey(2), weight.shape)
    step = 1e-2
    numeric = (
        loss(weight + step * direction, "forward") - loss(weight - step * direction, "forward")
    ) / (2 * step)
    assert abs(float(numeric)) > 1e-5  # not ~0: the check could fail
    np.testing.assert_allclose(float((analytic * direction).sum()), float(numeric), rtol=1e-2)
    assert_arrays_close(analytic, jax.grad(loss)(weight, "reverse"), torch.float32)


def test_chunk_size_reaches_the_map_over_directions(cnn, monkeypatch):
    _, x, w = cnn
    sizes = []
    lax_map = jax.lax.map

    def spy(f, xs, *, batch_size=None):
        sizes.append((len(xs), batch_size))
        return lax_map(f, xs, batch_size=batch_size)

    monkeypatch.setattr(jax.lax, "map", spy)
    xs = jnp.asarray(x.numpy())
    model = EqxCNN(w)
    gj.grad_cam_module(model, "convs.1", xs, targets=[0, 1], chunk_size=2, autodiff="forward")
    gj.grad_cam_module(model, "convs.1", xs, targets=[0, 1], autodiff="forward")
    assert sizes == [(5, 2)]  # the 5 channels' directions, 2 at a time; then one vmap


def assert_bfloat16_maps_close(cams, expected):
    """bfloat16 maps (K, B, H, W, 1), channels last, against float32 maps (K, B, 1, H, W)
    to bfloat16's 8 bits, relative to the maps' scale (which must not be ~0)."""
    assert cams.dtype == jnp.bfloat16
    scale = float(np.abs(expected).max())
    assert scale > 1e-3
    tolerance = TOLERANCES[torch.bfloat16]
    np.testing.assert_allclose(
        np.moveaxis(np.asarray(cams, np.float32), -1, 2),
        expected,
        rtol=tolerance["rtol"],
        atol=tolerance["atol"] * scale,
    )


@pytest.mark.parametrize("autodiff", ["forward", "reverse"])
def test_a_bfloat16_layer_gives_bfloat16_maps_equal_to_the_float32_maps(autodiff):
    """A Linen model whose convolution runs in bfloat16: the maps stay bfloat16 and equal
    the float32 model's maps (the same parameters), written out by hand, to bfloat16's
    precision; an explicit autodiff="forward" is not taken for a model that mixes its
    examples."""
    from test_jax import NestedFlaxNet, by_hand, nested_split

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    variables = NestedFlaxNet().init(jax.random.PRNGKey(1), x)
    trunk, head = nested_split(variables["params"])
    expected = np.stack([by_hand(trunk, head, x, lambda o, k=k: o[:, k]) for k in range(3)])
    model = NestedFlaxNet(dtype=jnp.bfloat16)
    cams = gj.grad_cam_flax(model, variables, x, "block.conv", targets=[0, 1, 2], autodiff=autodiff)
    assert_bfloat16_maps_close(cams, expected)


class WholeBfloat16Net(fnn.Module):
    """Every layer computes and keeps its parameters in bfloat16."""

    @fnn.compact
    def __call__(self, x):
        bf16 = dict(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
        h = fnn.Conv(16, (3, 3), name="conv", **bf16)(x)
        h = fnn.Conv(16, (3, 3), name="conv2", **bf16)(jnp.tanh(h))
        return fnn.Dense(40, name="fc", **bf16)(jnp.tanh(h).mean((1, 2)))


def test_a_whole_bfloat16_model_is_not_taken_for_one_that_mixes_examples():
    """Forward and reverse mode round differently in bfloat16 (their first maps differ by
    0.3-0.7% of the scale here): the check against reverse mode must allow for the
    dtype's precision (8 eps), or autodiff="forward" refuses a model whose examples are
    independent. The maps equal Grad-CAM from jax.grad by hand in bfloat16."""
    from test_jax import by_hand

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3)).astype(jnp.bfloat16)
    params = WholeBfloat16Net().init(jax.random.PRNGKey(1), x)["params"]

    bf16 = dict(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)

    def trunk(x):  # (B, H, W, 3) -> (B, 16, H, W)
        conv = fnn.Conv(16, (3, 3), **bf16).apply({"params": params["conv"]}, x)
        return jnp.moveaxis(conv, -1, 1)

    def head(a):  # -> (B, 40)
        h = fnn.Conv(16, (3, 3), **bf16).apply(
            {"params": params["conv2"]}, jnp.tanh(jnp.moveaxis(a, 1, -1))
        )
        return fnn.Dense(40, **bf16).apply({"params": params["fc"]}, jnp.tanh(h).mean((1, 2)))

    targets = list(range(40))
    cams = gj.grad_cam_flax(
        WholeBfloat16Net(), {"params": params}, x, "conv", targets=targets, autodiff="forward"
    )
    expected = np.stack(
        [np.asarray(by_hand(trunk, head, x, lambda o, k=k: o[:, k]), np.float32) for k in targets]
    )
    assert_bfloat16_maps_close(cams, expected)
