"""NNX and Equinox models explained by layer: Captum's numbers on a torch twin with the
same weights, every target form, the model left as one forward leaves it, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

import flax.linen as fnn
import gradcam_func as gf
import gradcam_func.jax as gj
from conftest import assert_arrays_close, assert_not_zero, exactly

eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")


class TorchCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        a = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(a.mean((2, 3)))


def torch_twin():
    torch.manual_seed(0)
    return TorchCNN().eval()


def weights(model):
    return {k: np.asarray(v.detach()) for k, v in model.state_dict().items()}


class EqxCNN(eqx.Module):
    """The twin for one example (C, H, W), with its convolutions in a list."""

    convs: list
    fc: eqx.nn.Linear

    def __init__(self, w):
        key = jax.random.PRNGKey(0)
        convs = [
            eqx.nn.Conv2d(3, 4, 3, padding=1, key=key),
            eqx.nn.Conv2d(4, 5, 3, padding=1, key=key),
        ]
        for i, name in enumerate(["conv1", "conv2"]):
            convs[i] = eqx.tree_at(
                lambda c: (c.weight, c.bias),
                convs[i],
                (jnp.asarray(w[f"{name}.weight"]), jnp.asarray(w[f"{name}.bias"])[:, None, None]),
            )
        self.convs = convs
        fc = eqx.nn.Linear(5, 3, key=key)
        self.fc = eqx.tree_at(
            lambda f: (f.weight, f.bias),
            fc,
            (jnp.asarray(w["fc.weight"]), jnp.asarray(w["fc.bias"])),
        )

    def __call__(self, x):
        a = jax.nn.relu(self.convs[1](jax.nn.relu(self.convs[0](x))))
        return self.fc(a.mean((1, 2)))


class NnxCNN(nnx.Module):
    """The twin for a batch, channels-last (B, H, W, C), as NNX convolutions are."""

    def __init__(self, w):
        rngs = nnx.Rngs(0)
        self.conv1 = nnx.Conv(3, 4, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(4, 5, (3, 3), padding="SAME", rngs=rngs)
        self.fc = nnx.Linear(5, 3, rngs=rngs)
        for name in ("conv1", "conv2"):
            conv = getattr(self, name)
            conv.kernel[...] = jnp.asarray(w[f"{name}.weight"].transpose(2, 3, 1, 0))
            conv.bias[...] = jnp.asarray(w[f"{name}.bias"])
        self.fc.kernel[...] = jnp.asarray(w["fc.weight"].T)
        self.fc.bias[...] = jnp.asarray(w["fc.bias"])

    def __call__(self, x):
        a = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.fc(a.mean((1, 2)))


class LinenCNN(fnn.Module):
    """The twin in Flax Linen, channels-last; its variables come from ``linen_variables``."""

    @fnn.compact
    def __call__(self, x):
        a = jax.nn.relu(fnn.Conv(4, (3, 3), padding="SAME", name="conv1")(x))
        a = jax.nn.relu(fnn.Conv(5, (3, 3), padding="SAME", name="conv2")(a))
        return fnn.Dense(3, name="fc")(a.mean((1, 2)))


def linen_variables(w):
    conv = lambda name: {
        "kernel": jnp.asarray(w[f"{name}.weight"].transpose(2, 3, 1, 0)),
        "bias": jnp.asarray(w[f"{name}.bias"]),
    }
    fc = {"kernel": jnp.asarray(w["fc.weight"].T), "bias": jnp.asarray(w["fc.bias"])}
    return {"params": {"conv1": conv("conv1"), "conv2": conv("conv2"), "fc": fc}}


@pytest.fixture(scope="module")
def twins():
    model = torch_twin()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    w = weights(model)
    return model, x, EqxCNN(w), NnxCNN(w)


def captum(model, x, target, relu=False):
    """Captum's CAM; a callable target becomes the model's output (Captum's way)."""
    if callable(target):
        score, index = (lambda inputs: target(model(inputs))), None
    else:
        score, index = model, target
    cam = LayerGradCam(score, model.conv2).attribute(x, index, relu_attributions=relu).detach()
    assert_not_zero(cam)
    return cam.numpy()


# The JAX side's array target is made in the test: a JAX array made at import would start
# JAX's backend while pytest collects, and mutmut forks its workers after collecting
# (XLA's compiler then hangs in the forked worker).
TARGETS = [
    (0, 0),
    (2, 2),
    ([1, 2, 0], np.array([1, 2, 0])),
    (lambda out: out[:, 1] - out[:, 2], lambda out: out[:, 1] - out[:, 2]),
]


def _target(index):
    """TARGETS[index] as (torch's, JAX's), a NumPy array made a JAX array."""
    torch_target, jax_target = TARGETS[index]
    if isinstance(jax_target, np.ndarray):
        jax_target = jnp.asarray(jax_target)
    return torch_target, jax_target


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("index", range(len(TARGETS)))
def test_equinox_equals_captum(twins, index, relu):
    model, x, eqx_model, _ = twins
    torch_target, jax_target = _target(index)
    ours = gj.grad_cam_module(eqx_model, "convs.1", jnp.asarray(x.numpy()), jax_target, relu=relu)
    assert ours.shape == (3, 1, 6, 6)
    assert_arrays_close(ours, captum(model, x, torch_target, relu), torch.float32)


@pytest.mark.parametrize("kind", ["nnx", "linen"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("index", range(len(TARGETS)))
def test_flax_equals_captum(twins, index, relu, kind):
    model, x, _, nnx_model = twins
    torch_target, jax_target = _target(index)
    inputs = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    if kind == "nnx":
        ours = gj.grad_cam_module(nnx_model, "conv2", inputs, jax_target, relu=relu)
    else:
        variables = linen_variables(weights(model))
        ours = gj.grad_cam_module(
            LinenCNN(), "conv2", inputs, jax_target, relu=relu, variables=variables
        )
    assert ours.shape == (3, 6, 6, 1)  # channels-last, as the model
    expected = captum(model, x, torch_target, relu).transpose(0, 2, 3, 1)
    assert_arrays_close(ours, expected, torch.float32)


def test_many_targets_top_k_chunks_and_the_layer_object(twins):
    model, x, eqx_model, nnx_model = twins
    xs = jnp.asarray(x.numpy())
    expected = np.stack([captum(model, x, k) for k in range(3)])
    all_at_once = gj.grad_cam_module(eqx_model, eqx_model.convs[1], xs, targets=[0, 1, 2])
    chunked = gj.grad_cam_module(eqx_model, "convs.1", xs, targets=[0, 1, 2], chunk_size=2)
    assert_arrays_close(all_at_once, expected, torch.float32)
    assert_arrays_close(chunked, expected, torch.float32)
    with pytest.raises(gj.GradCamError, match=r"^grad_cam_module\(\.\.\., target=7\): index 7 "):
        gj.grad_cam_module(eqx_model, "convs.1", xs, 7)
    cams, classes = gj.grad_cam_module(
        nnx_model, nnx_model.conv2, xs.transpose(0, 2, 3, 1), targets=gj.top_k(2)
    )
    best = model(x).argsort(1, descending=True)[:, :2].T.numpy()
    np.testing.assert_array_equal(np.asarray(classes), best)
    for k in range(2):
        per_example = [captum(model, x[b : b + 1], int(best[k, b]))[0] for b in range(3)]
        assert_arrays_close(cams[k], np.stack(per_example).transpose(0, 2, 3, 1), torch.float32)


def test_sum_channels_false_sums_to_the_map(twins):
    _, x, eqx_model, nnx_model = twins
    xs = jnp.asarray(x.numpy())
    channels_last = xs.transpose(0, 2, 3, 1)
    per_channel = gj.grad_cam_module(nnx_model, "conv2", channels_last, 1, sum_channels=False)
    assert per_channel.shape == (3, 6, 6, 5)
    assert_arrays_close(
        per_channel.sum(-1, keepdims=True),
        gj.grad_cam_module(nnx_model, "conv2", channels_last, 1),
        torch.float32,
    )
    per_channel = gj.grad_cam_module(eqx_model, "convs.1", xs, 1, sum_channels=False)
    assert per_channel.shape == (3, 5, 6, 6)
    assert_arrays_close(
        per_channel.sum(1, keepdims=True),
        gj.grad_cam_module(eqx_model, "convs.1", xs, 1),
        torch.float32,
    )


def test_jit_with_the_layer_static_equals_eager(twins):
    _, x, eqx_model, nnx_model = twins
    xs = jnp.asarray(x.numpy())
    jitted = jax.jit(lambda m, x: gj.grad_cam_module(m, "convs.1", x, 2))
    assert_arrays_close(
        jitted(eqx_model, xs), gj.grad_cam_module(eqx_model, "convs.1", xs, 2), torch.float32
    )
    channels_last = xs.transpose(0, 2, 3, 1)
    eager = gj.grad_cam_module(nnx_model, "conv2", channels_last, 2)
    in_jit = jax.jit(lambda x: gj.grad_cam_module(nnx_model, "conv2", x, 2))(channels_last)
    assert_arrays_close(in_jit, eager, torch.float32)


def test_gradient_of_a_cam_loss_matches_finite_differences(twins):
    _, x, eqx_model, _ = twins
    xs = jnp.asarray(x.numpy(), dtype=jnp.float32)

    def loss(weight):  # the CAM depends on the head's weights through the gradient
        m = eqx.tree_at(lambda m: m.fc.weight, eqx_model, weight)
        return (gj.grad_cam_module(m, "convs.1", xs, 1) ** 2).sum()

    weight = eqx_model.fc.weight
    analytic = jax.grad(loss)(weight)
    direction = jax.random.normal(jax.random.PRNGKey(2), weight.shape)
    step = 1e-2
    numeric = (loss(weight + step * direction) - loss(weight - step * direction)) / (2 * step)
    np.testing.assert_allclose(float((analytic * direction).sum()), float(numeric), rtol=1e-2)
    assert abs(float(numeric)) > 1e-5  # not ~0: the check could fail


def test_nnx_batchnorm_statistics_end_as_after_one_forward():
    class Net(nnx.Module):
        def __init__(self):
            rngs = nnx.Rngs(0)
            self.conv = nnx.Conv(3, 4, (3, 3), padding="SAME", rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.fc = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.fc(jax.nn.relu(self.bn(self.conv(x))).mean((1, 2)))

    x = jax.random.normal(jax.random.PRNGKey(1), (4, 5, 5, 3))
    explained, plain = Net(), Net()
    explained.train(), plain.train()
    gj.grad_cam_module(explained, "bn", x, targets=[0, 1])
    plain(x)
    for a, b in zip(
        jax.tree_util.tree_leaves(nnx.state(explained)),
        jax.tree_util.tree_leaves(nnx.state(plain)),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    assert not np.allclose(np.asarray(plain.bn.mean[...]), 0)  # the statistics moved


def test_eval_mode_leaves_the_nnx_module_untouched(twins):
    _, x, _, nnx_model = twins
    before = jax.tree_util.tree_leaves(nnx.state(nnx_model))
    gj.grad_cam_module(nnx_model, "conv2", jnp.asarray(x.numpy().transpose(0, 2, 3, 1)), 0)
    after = jax.tree_util.tree_leaves(nnx.state(nnx_model))
    assert all(a is b for a, b in zip(before, after, strict=True))
    assert isinstance(nnx_model.conv2, nnx.Conv)  # the tap is gone


@pytest.mark.parametrize(
    "layer, message",
    [
        ("convs.7", r"convs has no attribute or item '7'"),
        ("conv9", r"the model has no attribute or item 'conv9'; it has \['convs', 'fc'\]"),
        ("fc.weight", r"names a ArrayImpl, not a submodule"),
    ],
)
def test_bad_paths_are_named(twins, layer, message):
    _, x, eqx_model, _ = twins
    with pytest.raises(gj.GradCamError, match=message):
        gj.grad_cam_module(eqx_model, layer, jnp.asarray(x.numpy()), 0)


def test_layers_never_or_twice_called_and_foreign_models_are_refused(twins):
    _, x, eqx_model, _ = twins
    xs = jnp.asarray(x.numpy())

    class Twice(eqx.Module):
        conv: eqx.nn.Conv2d
        unused: eqx.nn.Conv2d

        def __call__(self, x):
            return self.conv(self.conv(x)).sum()[None]

    key = jax.random.PRNGKey(0)
    twice = Twice(eqx.nn.Conv2d(3, 3, 1, key=key), eqx.nn.Conv2d(3, 3, 1, key=key))
    with pytest.raises(gj.GradCamError, match="called 2 times in one forward pass"):
        gj.grad_cam_module(twice, "conv", xs, 0)
    with pytest.raises(gj.GradCamError, match="never called in the forward pass"):
        gj.grad_cam_module(twice, "unused", xs, 0)
    with pytest.raises(gj.GradCamError, match="not a submodule of the model"):
        gj.grad_cam_module(eqx_model, eqx.nn.Conv2d(3, 3, 1, key=key), xs, 0)
    with pytest.raises(gj.GradCamError, match="expected a Flax NNX module .* or an Equinox"):
        gj.grad_cam_module(lambda x: x, "conv", xs, 0)


def test_vmap_over_an_ensemble_and_over_groups_of_inputs(twins):
    model, x, eqx_model, _ = twins
    xs = jnp.asarray(x.numpy())
    other = EqxCNN({k: 0.5 * v for k, v in weights(model).items()})
    params = [eqx.filter(m, eqx.is_array) for m in (eqx_model, other)]
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), *params)
    static = eqx.filter(eqx_model, eqx.is_array, inverse=True)

    def explain(p):
        return gj.grad_cam_module(eqx.combine(p, static), "convs.1", xs, 1)

    ensemble = jax.vmap(explain)(stacked)
    for i, member in enumerate((eqx_model, other)):
        assert_arrays_close(
            ensemble[i], gj.grad_cam_module(member, "convs.1", xs, 1), torch.float32
        )
    groups = jax.vmap(lambda g: gj.grad_cam_module(eqx_model, "convs.1", g, 1))(
        jnp.stack([xs, xs[::-1]])
    )
    assert_arrays_close(
        groups[1], gj.grad_cam_module(eqx_model, "convs.1", xs[::-1], 1), torch.float32
    )


def test_linen_needs_its_variables_and_others_refuse_them(twins):
    _, x, eqx_model, _ = twins
    with pytest.raises(gj.GradCamError, match=r"a Linen module needs variables=model.init"):
        gj.grad_cam_module(LinenCNN(), "conv2", jnp.asarray(x.numpy()), 0)
    with pytest.raises(gj.GradCamError, match=r"only Flax Linen modules take variables"):
        gj.grad_cam_module(eqx_model, "convs.1", jnp.asarray(x.numpy()), 0, variables={})


@pytest.mark.parametrize("value, shown", [(None, "NoneType None"), ("yes", "str 'yes'")])
def test_flags_take_true_or_false_only(twins, value, shown):
    """Every JAX entry point refuses a flag that is not a bool, naming itself."""
    model, x, eqx_model, _ = twins
    xs, nhwc = jnp.asarray(x.numpy()), jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    variables = linen_variables(weights(model))
    runs = {
        ("grad_cam", "relu"): lambda v: gj.grad_cam(
            jnp.tanh, lambda a: a.mean((2, 3)), xs, 0, relu=v
        ),
        ("grad_cam", "sum_channels"): lambda v: gj.grad_cam(
            jnp.tanh, lambda a: a.mean((2, 3)), xs, 0, sum_channels=v
        ),
        ("grad_cam_flax", "relu"): lambda v: gj.grad_cam_flax(
            LinenCNN(), variables, nhwc, "conv2", 0, relu=v
        ),
        ("grad_cam_module", "sum_channels"): lambda v: gj.grad_cam_module(
            eqx_model, "convs.1", xs, 0, sum_channels=v
        ),
        ("grad_cam_module", "attribute_to_layer_input"): lambda v: gj.grad_cam_module(
            eqx_model, "convs.1", xs, 0, attribute_to_layer_input=v
        ),
    }
    for (call, flag), run in runs.items():
        with pytest.raises(
            gj.GradCamError,
            match=exactly(
                f"{call}(..., {flag}=...): expected True or False, got {shown}. Pass a bool."
            ),
        ):
            run(value)


class TorchResidual(nn.Module):
    """conv2's input is also the shortcut: its gradient has two paths."""

    def __init__(self, detach_shortcut=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.detach_shortcut = detach_shortcut

    def forward(self, x):
        a = torch.relu(self.conv1(x))
        shortcut = a.detach() if self.detach_shortcut else a
        return self.fc((torch.relu(self.conv2(a)) + shortcut).mean((2, 3)))


class EqxResidual(eqx.Module):
    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    fc: eqx.nn.Linear

    def __init__(self, w):
        key = jax.random.PRNGKey(0)
        convs = []
        for name, (i, o) in (("conv1", (3, 4)), ("conv2", (4, 4))):
            conv = eqx.nn.Conv2d(i, o, 3, padding=1, key=key)
            convs.append(
                eqx.tree_at(
                    lambda c: (c.weight, c.bias),
                    conv,
                    (
                        jnp.asarray(w[f"{name}.weight"]),
                        jnp.asarray(w[f"{name}.bias"])[:, None, None],
                    ),
                )
            )
        self.conv1, self.conv2 = convs
        fc = eqx.nn.Linear(4, 3, key=key)
        self.fc = eqx.tree_at(
            lambda f: (f.weight, f.bias),
            fc,
            (jnp.asarray(w["fc.weight"]), jnp.asarray(w["fc.bias"])),
        )

    def __call__(self, x):
        a = jax.nn.relu(self.conv1(x))
        return self.fc((jax.nn.relu(self.conv2(a)) + a).mean((1, 2)))


class NnxResidual(nnx.Module):
    def __init__(self, w):
        rngs = nnx.Rngs(0)
        self.conv1 = nnx.Conv(3, 4, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(4, 4, (3, 3), padding="SAME", rngs=rngs)
        self.fc = nnx.Linear(4, 3, rngs=rngs)
        for name in ("conv1", "conv2"):
            conv = getattr(self, name)
            conv.kernel[...] = jnp.asarray(w[f"{name}.weight"].transpose(2, 3, 1, 0))
            conv.bias[...] = jnp.asarray(w[f"{name}.bias"])
        self.fc.kernel[...] = jnp.asarray(w["fc.weight"].T)
        self.fc.bias[...] = jnp.asarray(w["fc.bias"])

    def __call__(self, x):
        a = jax.nn.relu(self.conv1(x))
        return self.fc((jax.nn.relu(self.conv2(a)) + a).mean((1, 2)))


class Batched(eqx.Module):
    inner: eqx.Module

    def __call__(self, xs):
        return jax.vmap(self.inner)(xs)


@pytest.mark.parametrize("per_example", [True, False])
def test_layer_input_counts_every_use_of_the_array_as_captum(per_example):
    torch.manual_seed(3)
    model = TorchResidual().eval()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    w = weights(model)
    captum_input = lambda m, t: (
        LayerGradCam(m, m.conv2).attribute(x, t, attribute_to_layer_input=True).detach().numpy()
    )
    expected = np.stack([captum_input(model, t) for t in (0, 2)])
    assert_not_zero(torch.from_numpy(expected))
    through_the_layer_only = TorchResidual(detach_shortcut=True).eval()
    through_the_layer_only.load_state_dict(model.state_dict())
    assert not np.allclose(captum_input(through_the_layer_only, 0), expected[0], atol=1e-4)

    xs = jnp.asarray(x.numpy())
    eqx_model = EqxResidual(w)
    if per_example:
        ours = gj.grad_cam_module(
            eqx_model, "conv2", xs, targets=[0, 2], attribute_to_layer_input=True
        )
    else:  # a model that vmaps itself over the batch, called on the whole batch
        ours = gj.grad_cam_module(
            Batched(eqx_model),
            "inner.conv2",
            xs,
            targets=[0, 2],
            attribute_to_layer_input=True,
            per_example=False,
        )
    assert_arrays_close(ours, expected, torch.float32)

    nnx_cams = gj.grad_cam_module(
        NnxResidual(w),
        "conv2",
        xs.transpose(0, 2, 3, 1),
        targets=[0, 2],
        attribute_to_layer_input=True,
    )
    assert_arrays_close(nnx_cams, expected.transpose(0, 1, 3, 4, 2), torch.float32)


def test_layer_input_under_jit_and_its_limit_named():
    torch.manual_seed(3)
    w = weights(TorchResidual())
    xs = jax.random.normal(jax.random.PRNGKey(5), (2, 3, 6, 6))
    model = EqxResidual(w)
    eager = gj.grad_cam_module(model, "conv2", xs, 1, attribute_to_layer_input=True)
    jitted = jax.jit(
        lambda x: gj.grad_cam_module(model, "conv2", x, 1, attribute_to_layer_input=True)
    )
    assert_arrays_close(jitted(xs), eager, torch.float32)

    class Compiled(eqx.Module):  # the layer runs inside the model's own jit
        inner: EqxResidual

        def __call__(self, x):
            return eqx.filter_jit(self.inner)(x)

    with pytest.raises(
        gj.GradCamError, match=r"made inside a jit-compiled or otherwise nested part"
    ):
        gj.grad_cam_module(Compiled(model), "inner.conv2", xs, 1, attribute_to_layer_input=True)


def test_linen_layer_input_counts_every_use():
    class LinenResidual(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            a = jax.nn.relu(fnn.Conv(4, (3, 3), padding="SAME", name="conv1")(x))
            b = jax.nn.relu(fnn.Conv(4, (3, 3), padding="SAME", name="conv2")(a)) + a
            return fnn.Dense(3, name="fc")(b.mean((1, 2)))

    torch.manual_seed(3)
    model = TorchResidual().eval()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    w = weights(model)
    variables = linen_variables(w)
    expected = LayerGradCam(model, model.conv2).attribute(x, 2, attribute_to_layer_input=True)
    assert_not_zero(expected)
    ours = gj.grad_cam_module(
        LinenResidual(),
        "conv2",
        jnp.asarray(x.numpy().transpose(0, 2, 3, 1)),
        2,
        variables=variables,
        attribute_to_layer_input=True,
    )
    assert_arrays_close(ours, expected.detach().numpy().transpose(0, 2, 3, 1), torch.float32)


class TorchBN(nn.Module):
    """Conv, BatchNorm, ReLU, then a residual block: conv2's input is also the shortcut."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = torch.relu(self.bn(self.conv1(x)))
        return self.fc((torch.relu(self.conv2(a)) + a).mean((2, 3)))  # residual


class NnxBN(nnx.Module):
    def __init__(self, w):
        rngs = nnx.Rngs(0)
        self.conv1 = nnx.Conv(3, 4, (3, 3), padding="SAME", rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.conv2 = nnx.Conv(4, 4, (3, 3), padding="SAME", rngs=rngs)
        self.fc = nnx.Linear(4, 3, rngs=rngs)
        for name in ("conv1", "conv2"):
            conv = getattr(self, name)
            conv.kernel[...] = jnp.asarray(w[f"{name}.weight"].transpose(2, 3, 1, 0))
            conv.bias[...] = jnp.asarray(w[f"{name}.bias"])
        self.bn.scale[...] = jnp.asarray(w["bn.weight"])
        self.bn.bias[...] = jnp.asarray(w["bn.bias"])
        self.bn.mean[...] = jnp.asarray(w["bn.running_mean"])
        self.bn.var[...] = jnp.asarray(w["bn.running_var"])
        self.fc.kernel[...] = jnp.asarray(w["fc.weight"].T)
        self.fc.bias[...] = jnp.asarray(w["fc.bias"])

    def __call__(self, x):
        a = jax.nn.relu(self.bn(self.conv1(x)))
        return self.fc((jax.nn.relu(self.conv2(a)) + a).mean((1, 2)))


@pytest.mark.parametrize(
    "layer, at_input", [("bn", False), ("conv2", False), ("bn", True), ("conv2", True)]
)
def test_nnx_batchnorm_in_eval_mode_equals_captum(layer, at_input):
    torch.manual_seed(5)
    model = TorchBN()
    with torch.no_grad():  # statistics far from the initial (0, 1), so they matter
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    expected = LayerGradCam(model, getattr(model, layer)).attribute(
        x, 1, attribute_to_layer_input=at_input
    )
    assert_not_zero(expected)
    twin = NnxBN(weights(model))
    twin.eval()
    ours = gj.grad_cam_module(
        twin,
        layer,
        jnp.asarray(x.numpy().transpose(0, 2, 3, 1)),
        1,
        attribute_to_layer_input=at_input,
    )
    assert_arrays_close(ours, expected.detach().numpy().transpose(0, 2, 3, 1), torch.float32)


def test_a_target_that_does_not_fit_the_output_is_named(twins):
    _, x, eqx_model, _ = twins
    xs = jnp.asarray(x.numpy())
    with pytest.raises(
        gj.GradCamError, match=r"index 7 is out of range for axis 1 .* shape \(3, 3\)"
    ):
        gj.grad_cam_module(eqx_model, "convs.1", xs, 7)
    with pytest.raises(gj.GradCamError, match=r"got 2 entries for a batch of 3"):
        gj.grad_cam_module(eqx_model, "convs.1", xs, jnp.array([0, 1]))


DIM, HEADS = 8, 2


class TorchViT(nn.Module):
    """Patches (2x2 of a 6x6 image: 9 tokens), one pre-norm transformer block, mean."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, 2, stride=2)
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.mlp1, self.mlp2 = nn.Linear(DIM, 2 * DIM), nn.Linear(2 * DIM, DIM)
        self.head = nn.Linear(DIM, 3)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)  # (B, T, D)
        q, k, v = self.qkv(self.norm1(t)).chunk(3, -1)
        split = lambda a: a.unflatten(-1, (HEADS, DIM // HEADS)).transpose(1, 2)
        weights = (split(q) @ split(k).transpose(-1, -2) / (DIM // HEADS) ** 0.5).softmax(-1)
        t = t + self.proj((weights @ split(v)).transpose(1, 2).flatten(2))
        t = t + self.mlp2(torch.nn.functional.gelu(self.mlp1(self.norm2(t)), approximate="tanh"))
        return self.head(t.mean(1))


def vit_attention(qkv, t):
    """The block's attention on tokens (T, D) of one example, as TorchViT computes it."""
    q, k, v = jnp.split(qkv, 3, -1)
    split = lambda a: a.reshape(a.shape[0], HEADS, DIM // HEADS).transpose(1, 0, 2)
    weights = jax.nn.softmax(split(q) @ split(k).transpose(0, 2, 1) / (DIM // HEADS) ** 0.5, -1)
    return (weights @ split(v)).transpose(1, 0, 2).reshape(t.shape[0], DIM)


def eqx_linear(w, name, key):
    out, into = w[f"{name}.weight"].shape
    layer = eqx.nn.Linear(into, out, key=key)
    return eqx.tree_at(
        lambda f: (f.weight, f.bias),
        layer,
        (jnp.asarray(w[f"{name}.weight"]), jnp.asarray(w[f"{name}.bias"])),
    )


class EqxViT(eqx.Module):
    """TorchViT per example, every per-token layer vmapped over the tokens inside."""

    patch: eqx.nn.Conv2d
    norm1: eqx.nn.LayerNorm
    norm2: eqx.nn.LayerNorm
    qkv: eqx.nn.Linear
    proj: eqx.nn.Linear
    mlp1: eqx.nn.Linear
    mlp2: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, w):
        key = jax.random.PRNGKey(0)
        patch = eqx.nn.Conv2d(3, DIM, 2, stride=2, key=key)
        self.patch = eqx.tree_at(
            lambda c: (c.weight, c.bias),
            patch,
            (jnp.asarray(w["patch.weight"]), jnp.asarray(w["patch.bias"])[:, None, None]),
        )
        norms = []
        for name in ("norm1", "norm2"):
            norm = eqx.nn.LayerNorm(DIM, eps=1e-5)
            norms.append(
                eqx.tree_at(
                    lambda n: (n.weight, n.bias),
                    norm,
                    (jnp.asarray(w[f"{name}.weight"]), jnp.asarray(w[f"{name}.bias"])),
                )
            )
        self.norm1, self.norm2 = norms
        self.qkv, self.proj = eqx_linear(w, "qkv", key), eqx_linear(w, "proj", key)
        self.mlp1, self.mlp2 = eqx_linear(w, "mlp1", key), eqx_linear(w, "mlp2", key)
        self.head = eqx_linear(w, "head", key)

    def __call__(self, x):
        t = self.patch(x).reshape(DIM, -1).T  # (T, D)
        each = jax.vmap  # per token
        t = t + each(self.proj)(vit_attention(each(self.qkv)(each(self.norm1)(t)), t))
        hidden = jax.nn.gelu(each(self.mlp1)(each(self.norm2)(t)), approximate=True)
        t = t + each(self.mlp2)(hidden)
        return self.head(t.mean(0))


class NnxViT(nnx.Module):
    def __init__(self, w):
        rngs = nnx.Rngs(0)
        self.patch = nnx.Conv(3, DIM, (2, 2), strides=2, padding="VALID", rngs=rngs)
        self.patch.kernel[...] = jnp.asarray(w["patch.weight"].transpose(2, 3, 1, 0))
        self.patch.bias[...] = jnp.asarray(w["patch.bias"])
        for name in ("norm1", "norm2"):
            norm = nnx.LayerNorm(DIM, epsilon=1e-5, rngs=rngs)
            norm.scale[...] = jnp.asarray(w[f"{name}.weight"])
            norm.bias[...] = jnp.asarray(w[f"{name}.bias"])
            setattr(self, name, norm)
        for name in ("qkv", "proj", "mlp1", "mlp2", "head"):
            out, into = w[f"{name}.weight"].shape
            linear = nnx.Linear(into, out, rngs=rngs)
            linear.kernel[...] = jnp.asarray(w[f"{name}.weight"].T)
            linear.bias[...] = jnp.asarray(w[f"{name}.bias"])
            setattr(self, name, linear)

    def __call__(self, x):  # (B, H, W, 3)
        t = self.patch(x).reshape(x.shape[0], -1, DIM)  # (B, T, D), tokens row-major
        attention = jax.vmap(vit_attention)(self.qkv(self.norm1(t)), t)
        t = t + self.proj(attention)
        t = t + self.mlp2(jax.nn.gelu(self.mlp1(self.norm2(t)), approximate=True))
        return self.head(t.mean(1))


@pytest.mark.parametrize(
    "layer, at_input", [("norm2", False), ("mlp1", False), ("norm2", True), ("proj", False)]
)
def test_vits_equal_captum_on_token_layers(layer, at_input):
    torch.manual_seed(7)
    model = TorchViT().eval()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(8))
    w = weights(model)
    for target, jax_target in [(1, 1), ([0, 2, 1], jnp.array([0, 2, 1]))]:
        # Captum on (B, T, D): tokens are its "channels", pooled over D
        expected = LayerGradCam(model, getattr(model, layer)).attribute(
            x, target, attribute_to_layer_input=at_input
        )
        assert_not_zero(expected)
        expected = expected.detach().numpy()
        xs = jnp.asarray(x.numpy())
        ours = gj.grad_cam_module(
            EqxViT(w), layer, xs, jax_target, channel_axis=1, attribute_to_layer_input=at_input
        )
        assert_arrays_close(ours, expected, torch.float32)
        ours = gj.grad_cam_module(
            NnxViT(w),
            layer,
            xs.transpose(0, 2, 3, 1),
            jax_target,
            channel_axis=1,
            attribute_to_layer_input=at_input,
        )
        assert_arrays_close(ours, expected, torch.float32)


class EqxBN(eqx.Module):
    """TorchBN in Equinox, per example, its BatchNorm's statistics in an eqx.nn.State."""

    conv1: eqx.nn.Conv2d
    bn: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    fc: eqx.nn.Linear

    def __init__(self, w):
        key = jax.random.PRNGKey(0)
        convs = []
        for name, (i, o) in (("conv1", (3, 4)), ("conv2", (4, 4))):
            conv = eqx.nn.Conv2d(i, o, 3, padding=1, key=key)
            convs.append(
                eqx.tree_at(
                    lambda c: (c.weight, c.bias),
                    conv,
                    (
                        jnp.asarray(w[f"{name}.weight"]),
                        jnp.asarray(w[f"{name}.bias"])[:, None, None],
                    ),
                )
            )
        self.conv1, self.conv2 = convs
        bn = eqx.nn.BatchNorm(4, axis_name="batch", inference=True, mode="ema")
        self.bn = eqx.tree_at(
            lambda b: (b.weight, b.bias),
            bn,
            (jnp.asarray(w["bn.weight"]), jnp.asarray(w["bn.bias"])),
        )
        self.fc = eqx_linear(w, "fc", key)

    def __call__(self, x, state):
        a, state = self.bn(self.conv1(x), state)
        a = jax.nn.relu(a)
        return self.fc((jax.nn.relu(self.conv2(a)) + a).mean((1, 2))), state


@pytest.mark.parametrize(
    "layer, at_input", [("bn", False), ("conv2", False), ("bn", True), ("conv2", True)]
)
def test_equinox_batchnorm_in_inference_mode_equals_captum(layer, at_input):
    torch.manual_seed(5)
    model = TorchBN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    expected = LayerGradCam(model, getattr(model, layer)).attribute(
        x, 1, attribute_to_layer_input=at_input
    )
    assert_not_zero(expected)
    w = weights(model)
    twin, state = eqx.nn.make_with_state(EqxBN)(w)
    statistics = (jnp.asarray(w["bn.running_mean"]), jnp.asarray(w["bn.running_var"]))
    state = state.set(twin.bn.ema_state_index, statistics)
    ours = gj.grad_cam_module(
        twin, layer, jnp.asarray(x.numpy()), 1, state=state, attribute_to_layer_input=at_input
    )
    assert_arrays_close(ours, expected.detach().numpy(), torch.float32)


def test_nnx_dropout_rng_counters_end_as_after_one_forward():
    class Net(nnx.Module):
        def __init__(self):
            rngs = nnx.Rngs(0, dropout=1)
            self.conv = nnx.Conv(3, 4, (3, 3), padding="SAME", rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.fc = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.fc(self.drop(jax.nn.relu(self.conv(x))).mean((1, 2)))

    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 3))
    explained, plain = Net(), Net()
    cams = gj.grad_cam_module(explained, "conv", x, targets=[0, 1])
    plain(x)

    def numbers(a):  # RNG keys as their raw bits, counters as they are
        return np.asarray(
            jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a
        )

    explained_rngs = jax.tree_util.tree_leaves(nnx.state(explained, nnx.RngState))
    plain_rngs = jax.tree_util.tree_leaves(nnx.state(plain, nnx.RngState))
    assert explained_rngs
    for a, b in zip(explained_rngs, plain_rngs, strict=True):
        np.testing.assert_array_equal(numbers(a), numbers(b))
    assert np.asarray(cams).std() > 0
    # and the second call draws a new mask, as a second forward would
    again = gj.grad_cam_module(explained, "conv", x, targets=[0, 1])
    assert not np.allclose(np.asarray(again), np.asarray(cams))


def test_nnx_gradient_of_a_cam_loss_equals_torch_autograd_on_the_twin(twins):
    """Every parameter, convolutions included (finite differences are unreliable there:
    the CAM's ReLU derivatives jump), against torch.func.grad of the torch path."""
    model, x, _, nnx_model = twins
    xs = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    graphdef, params = nnx.split(nnx_model)

    def loss(params):
        cams = gj.grad_cam_module(nnx.merge(graphdef, params), "conv2", xs, 1)
        return 1e4 * (cams**2).sum()  # scaled so the gradients are well above float32's atol

    grads = jax.grad(loss)(params)
    torch_params = {k: v.detach() for k, v in model.named_parameters()}
    expected = torch.func.grad(
        lambda p: 1e4 * (gf.grad_cam(model, "conv2", x, 1, params=p) ** 2).sum()
    )(torch_params)
    for name in ("conv1", "conv2"):
        assert_not_zero(expected[f"{name}.weight"])
        kernel = expected[f"{name}.weight"].numpy().transpose(2, 3, 1, 0)
        assert_arrays_close(grads[name]["kernel"][...], kernel, torch.float32)
        assert_arrays_close(
            grads[name]["bias"][...], expected[f"{name}.bias"].numpy(), torch.float32
        )
    assert_arrays_close(grads["fc"]["kernel"][...], expected["fc.weight"].numpy().T, torch.float32)


def test_vmap_over_an_nnx_ensemble(twins):
    model, x, _, nnx_model = twins
    xs = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    other = NnxCNN({k: 0.5 * v for k, v in weights(model).items()})
    graphdef, first = nnx.split(nnx_model)
    _, second = nnx.split(other)
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), first, second)
    ensemble = jax.vmap(
        lambda state: gj.grad_cam_module(nnx.merge(graphdef, state), "conv2", xs, 1)
    )(stacked)
    for i, member in enumerate((nnx_model, other)):
        assert_arrays_close(ensemble[i], gj.grad_cam_module(member, "conv2", xs, 1), torch.float32)


def test_chunk_size_reaches_the_map_over_cotangents(twins, monkeypatch):
    """chunk_size runs the pullbacks chunk_size cotangents at a time (``jax.lax.map`` with
    that batch size); without it, one vmap over all of them."""
    _, x, eqx_model, _ = twins
    sizes = []
    lax_map = jax.lax.map

    def spy(f, xs, *, batch_size=None):
        sizes.append(batch_size)
        return lax_map(f, xs, batch_size=batch_size)

    monkeypatch.setattr(jax.lax, "map", spy)
    xs = jnp.asarray(x.numpy())
    gj.grad_cam_module(eqx_model, "convs.1", xs, targets=[0, 1, 2], chunk_size=2)
    gj.grad_cam_module(eqx_model, "convs.1", xs, targets=[0, 1, 2])
    assert sizes == [2]


def test_module_layer_vjp_gives_the_activation_and_its_gradient_as_torch_autograd(twins):
    """The split itself, against the torch twin: the output, the layer's activation and
    the pullback of a cotangent at the output, for Equinox (channels-first) and NNX
    (channels-last)."""
    model, x, eqx_model, nnx_model = twins
    seen = []
    handle = model.conv2.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        output = model(x)
    finally:
        handle.remove()
    cotangent = torch.randn(output.shape, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad(output, seen[0], cotangent)
    assert_not_zero(grad)
    for jax_model, layer, xs, to_layout in [
        (eqx_model, "convs.1", x.numpy(), lambda a: a),
        (nnx_model, "conv2", x.numpy().transpose(0, 2, 3, 1), lambda a: a.transpose(0, 3, 1, 2)),
    ]:
        out, act, pullback = gj.module_layer_vjp(jax_model, layer, jnp.asarray(xs))
        assert_arrays_close(out, output.detach().numpy(), torch.float32)
        assert_arrays_close(to_layout(np.asarray(act)), seen[0].detach().numpy(), torch.float32)
        assert_arrays_close(
            to_layout(np.asarray(pullback(jnp.asarray(cotangent.numpy())))),
            grad.numpy(),
            torch.float32,
        )


def test_module_layer_vjp_names_itself_in_its_errors(twins):
    _, x, eqx_model, _ = twins
    xs = jnp.asarray(x.numpy())
    with pytest.raises(gj.GradCamError, match=r"^module_layer_vjp\(\.\.\., layer='conv9'\)"):
        gj.module_layer_vjp(eqx_model, "conv9", xs)
    with pytest.raises(gj.GradCamError, match=r"^module_layer_vjp\(model=\.\.\.\): expected"):
        gj.module_layer_vjp(lambda x: x, "conv", xs)
    with pytest.raises(gj.GradCamError, match=r"^module_layer_vjp\(\.\.\., attribute_to_layer"):
        gj.module_layer_vjp(eqx_model, "convs.1", xs, attribute_to_layer_input=None)
    with pytest.raises(gj.GradCamError, match=r"^grad_cam_module\(\.\.\., layer='conv9'\)"):
        gj.grad_cam_module(eqx_model, "conv9", xs, 0)
