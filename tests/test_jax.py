"""gradcam_func.jax: targets, stacking, jit, Flax without hand-splitting, DLPack."""

import functools
import re
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradcam_func.jax as gj
from conftest import TOLERANCES
from gradcam_func import GradCamError


def split_model(seed=0):
    """trunk: (B, 3, 6, 6) -> (B, 4, 6, 6); head: -> (B, 5)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    w1 = jax.random.normal(k1, (4, 3, 3, 3)) * 0.5
    w2 = jax.random.normal(k2, (5, 4)) * 0.5

    def trunk(x):
        return jnp.tanh(
            jax.lax.conv_general_dilated(
                x, w1, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
            )
        )

    def head(a):
        return jax.nn.softplus(a).mean((2, 3)) @ w2.T

    return trunk, head


@pytest.fixture
def setup():
    trunk, head = split_model()
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 6, 6))
    return trunk, head, x


def by_hand(trunk, head, x, score):
    """Grad-CAM from jax.grad of a score, written out apart from the library."""
    acts = trunk(x)
    grads = jax.grad(lambda a: score(head(a)).sum())(acts)
    return (grads.mean((2, 3), keepdims=True) * acts).sum(1, keepdims=True)


def test_every_target_form(setup):
    trunk, head, x = setup
    classes = jnp.array([0, 4, 2])
    contrast = lambda o: o[:, 0] - o[:, 1]
    forms = [
        (2, lambda o: o[:, 2]),
        ((3,), lambda o: o[:, 3]),
        (jnp.array(1), lambda o: o[:, 1]),
        (classes, lambda o: o[jnp.arange(3), classes]),
        (contrast, contrast),
    ]
    for target, score in forms:
        np.testing.assert_allclose(
            gj.grad_cam(trunk, head, x, target),
            by_hand(trunk, head, x, score),
            **TOLERANCES[torch.float32],
        )


def test_targets_stack_the_single_calls_and_top_k(setup):
    trunk, head, x = setup
    targets = [0, jnp.array([1, 2, 3]), lambda o: jax.nn.log_softmax(o)[:, 4]]
    stacked = gj.grad_cam(trunk, head, x, targets=targets, relu=True)
    for k, t in enumerate(targets):
        np.testing.assert_allclose(
            stacked[k], gj.grad_cam(trunk, head, x, t, relu=True), **TOLERANCES[torch.float32]
        )
    cams, classes = gj.grad_cam(trunk, head, x, targets=gj.top_k(2))
    np.testing.assert_array_equal(classes, jax.lax.top_k(head(trunk(x)), 2)[1].T)
    np.testing.assert_allclose(
        cams[1], gj.grad_cam(trunk, head, x, classes[1]), **TOLERANCES[torch.float32]
    )


def test_jit_gives_the_eager_result(setup):
    trunk, head, x = setup
    jitted = jax.jit(lambda x: gj.grad_cam(trunk, head, x, targets=[1, 3], relu=True))
    np.testing.assert_allclose(
        jitted(x),
        gj.grad_cam(trunk, head, x, targets=[1, 3], relu=True),
        **TOLERANCES[torch.float32],
    )
    per_example = jax.jit(lambda x, c: gj.grad_cam(trunk, head, x, c))
    np.testing.assert_allclose(
        per_example(x, jnp.array([0, 1, 2])),
        gj.grad_cam(trunk, head, x, jnp.array([0, 1, 2])),
        **TOLERANCES[torch.float32],
    )


def test_channels_last(setup):
    trunk, head, x = setup
    last = gj.grad_cam(
        lambda x: jnp.moveaxis(trunk(x), 1, -1),
        lambda a: head(jnp.moveaxis(a, -1, 1)),
        x,
        2,
        channel_axis=-1,
    )
    np.testing.assert_allclose(
        jnp.moveaxis(last, -1, 1), gj.grad_cam(trunk, head, x, 2), **TOLERANCES[torch.float32]
    )


def test_layer_vjp_pullback_is_the_gradient(setup):
    trunk, head, x = setup
    output, acts, pullback = gj.layer_vjp(trunk, head, x)
    cot = jax.random.normal(jax.random.PRNGKey(2), output.shape)
    expected = jax.grad(lambda a: (head(a) * cot).sum())(acts)
    np.testing.assert_allclose(pullback(cot), expected, **TOLERANCES[torch.float32])


class FlaxNet(fnn.Module):
    @fnn.compact
    def __call__(self, x):
        x = fnn.relu(fnn.Conv(4, (3, 3), name="conv1")(x))
        x = fnn.Conv(6, (3, 3), name="conv2")(x)
        return fnn.Dense(3, name="fc")(jnp.tanh(x).mean((1, 2)))


def test_flax_model_without_hand_splitting():
    model = FlaxNet()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(1), x)
    p = variables["params"]

    def trunk(x):
        h = fnn.relu(fnn.Conv(4, (3, 3)).apply({"params": p["conv1"]}, x))
        return jnp.moveaxis(fnn.Conv(6, (3, 3)).apply({"params": p["conv2"]}, h), -1, 1)

    def head(a):
        return fnn.Dense(3).apply(
            {"params": p["fc"]}, jnp.tanh(jnp.moveaxis(a, 1, -1)).mean((1, 2))
        )

    ours = gj.grad_cam_flax(model, variables, x, "conv2", targets=[0, 2])
    expected = jnp.stack([by_hand(trunk, head, x, lambda o, c=c: o[:, c]) for c in (0, 2)])
    np.testing.assert_allclose(jnp.moveaxis(ours, -1, 2), expected, **TOLERANCES[torch.float32])
    jitted = jax.jit(lambda x: gj.grad_cam_flax(model, variables, x, "conv2", 1))
    np.testing.assert_allclose(
        jitted(x), gj.grad_cam_flax(model, variables, x, "conv2", 1), **TOLERANCES[torch.float32]
    )
    with pytest.raises(
        GradCamError,
        match=re.escape(
            "grad_cam_flax(..., layer='conv9'): no submodule with that path ran in the "
            "forward pass. Paths are the names in variables['params'], joined with dots."
        )
        + r"(\n|$)",  # JAX may add a note on its own line
    ):
        gj.grad_cam_flax(model, variables, x, "conv9", 1)
    with pytest.raises(GradCamError, match=r"^grad_cam_flax\(\.\.\., target=7\): index 7 "):
        gj.grad_cam_flax(model, variables, x, "conv2", 7)
    # relu: the by-hand map has negative entries, so the option is visible
    plain = by_hand(trunk, head, x, lambda o: o[:, 1])
    assert float(plain.min()) < 0
    np.testing.assert_allclose(
        jnp.moveaxis(gj.grad_cam_flax(model, variables, x, "conv2", 1, relu=True), -1, 1),
        jnp.maximum(plain, 0),
        **TOLERANCES[torch.float32],
    )


class TwiceNet(fnn.Module):
    @fnn.compact
    def __call__(self, x):
        conv = fnn.Conv(3, (3, 3), name="shared")
        return conv(conv(x)).mean((1, 2, 3))


def test_flax_submodule_run_twice_is_refused():
    x = jnp.ones((1, 4, 4, 3))
    variables = TwiceNet().init(jax.random.PRNGKey(0), x)
    with pytest.raises(
        GradCamError,
        match=re.escape(
            "grad_cam_flax(..., layer='shared'): the submodule is called more than once in "
            "one forward pass, so its activation is ambiguous. Pick a submodule that runs once."
        )
        + r"(\n|$)",  # JAX may add a note on its own line
    ):
        gj.grad_cam_flax(TwiceNet(), variables, x, "shared")


class Block(fnn.Module):
    dtype: Any = None

    @fnn.compact
    def __call__(self, x, *, scale):
        return fnn.Conv(4, (3, 3), dtype=self.dtype, name="conv")(x) * scale


class NestedFlaxNet(fnn.Module):
    dtype: Any = jnp.float32

    @fnn.compact
    def __call__(self, x):
        h = Block(self.dtype, name="block")(x, scale=2.0)
        return fnn.Dense(3, name="fc")(jnp.tanh(h).mean((1, 2)))


def nested_split(params):
    """NestedFlaxNet split by hand at "block.conv", float32: trunk (B, H, W, 3) ->
    (B, 4, H, W) channels first; head -> (B, 3)."""

    def trunk(x):
        conv = fnn.Conv(4, (3, 3)).apply({"params": params["block"]["conv"]}, x)
        return jnp.moveaxis(conv, -1, 1)

    def head(a):
        h = jnp.tanh(jnp.moveaxis(a, 1, -1) * 2.0).mean((1, 2))
        return fnn.Dense(3).apply({"params": params["fc"]}, h)

    return trunk, head


def test_flax_submodule_by_dotted_path_in_a_model_with_keyword_arguments():
    """A submodule inside a submodule ("block.conv"), in a model that calls a submodule with
    a keyword argument (the interception passes it on), against jax.grad by hand."""
    model = NestedFlaxNet()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(1), x)
    trunk, head = nested_split(variables["params"])
    ours = gj.grad_cam_flax(model, variables, x, "block.conv", 1)
    expected = by_hand(trunk, head, x, lambda o: o[:, 1])
    assert float(jnp.abs(expected).max()) > 1e-4
    np.testing.assert_allclose(jnp.moveaxis(ours, -1, 1), expected, **TOLERANCES[torch.float32])


def test_flax_layer_vjp_gives_the_output_the_activation_and_its_pullback():
    """flax_layer_vjp at "block.conv": the model's output, the submodule's activation
    (channels-last, as Flax makes it) and the gradient of a cotangent's dot product with
    the output at that activation, each against the split written by hand; its errors
    name flax_layer_vjp."""
    model = NestedFlaxNet()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(1), x)
    trunk, head = nested_split(variables["params"])
    output, act, pullback = gj.flax_layer_vjp(model, variables, x, "block.conv")
    tolerance = TOLERANCES[torch.float32]
    np.testing.assert_allclose(output, model.apply(variables, x), **tolerance)
    np.testing.assert_allclose(act, jnp.moveaxis(trunk(x), 1, -1), **tolerance)
    cotangent = jax.random.normal(jax.random.PRNGKey(2), output.shape)
    expected = jax.grad(lambda a: (head(a) * cotangent).sum())(trunk(x))
    assert float(jnp.abs(expected).max()) > 1e-4
    np.testing.assert_allclose(jnp.moveaxis(pullback(cotangent), -1, 1), expected, **tolerance)
    with pytest.raises(
        GradCamError, match=r"^flax_layer_vjp\(\.\.\., layer='block\.conv9'\): no submodule "
    ):
        gj.flax_layer_vjp(model, variables, x, "block.conv9")
    twice = TwiceNet()
    with pytest.raises(
        GradCamError, match=r"^flax_layer_vjp\(\.\.\., layer='shared'\): the submodule is called "
    ):
        gj.flax_layer_vjp(twice, twice.init(jax.random.PRNGKey(0), x), x, "shared")


def test_flax_activation_keeps_its_dtype():
    """A bfloat16 activation gives a bfloat16 map: the perturbation added at the layer is
    made in the activation's dtype, not float32 (which would promote the rest)."""
    model = NestedFlaxNet(dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(1), x)
    assert gj.grad_cam_flax(model, variables, x, "block", 1).dtype == jnp.bfloat16


def test_minus_n_is_the_first_class_and_minus_n_minus_one_is_refused(setup):
    """Per-example class indices count from the end as Python's do: -N is class 0; -N - 1
    is out of range (JAX would drop it silently and give a zero map)."""
    trunk, head, x = setup  # N = 5 classes
    np.testing.assert_allclose(
        gj.grad_cam(trunk, head, x, jnp.array([-5, -5, -5])),
        gj.grad_cam(trunk, head, x, 0),
        **TOLERANCES[torch.float32],
    )
    with pytest.raises(GradCamError, match=r"^grad_cam\(\.\.\., target=array\(\[-6, 0, 0\]\)\)"):
        gj.grad_cam(trunk, head, x, jnp.array([-6, 0, 0]))


@pytest.mark.parametrize("batch", [1, 3])
def test_one_score_per_example_needs_no_target(setup, batch):
    """A model with one score per example, (B,) or (B, 1), is explained without a target:
    the score itself, against jax.grad by hand; a (B, N) output without one is refused."""
    trunk, head, x = setup
    x = x[:batch]
    expected = by_hand(trunk, head, x, lambda o: o[:, 3])
    assert float(jnp.abs(expected).max()) > 1e-4
    for one in (lambda a: head(a)[:, 3], lambda a: head(a)[:, 3:4]):
        np.testing.assert_allclose(
            gj.grad_cam(trunk, one, x), expected, **TOLERANCES[torch.float32]
        )
    with pytest.raises(
        GradCamError,
        match=re.escape(
            "grad_cam(..., target=None): without a target the model must return one score "
            f"per example, but its output has shape ({batch}, 5). Pass a target (an int, a "
            "per-example array or a callable) to pick one."
        )
        + "$",
    ):
        gj.grad_cam(trunk, head, x)


def test_a_callable_target_that_returns_no_array_is_refused_by_name(setup):
    """A score that is not an array (a Python float), and a callable without a __name__
    (a functools.partial), named "fn" in the message."""
    trunk, head, x = setup
    with pytest.raises(
        GradCamError, match=r"target=<lambda>\): a callable target .* it returned <class 'float'>"
    ):
        gj.grad_cam(trunk, head, x, lambda out: 1.0)
    with pytest.raises(GradCamError, match=r"^grad_cam\(\.\.\., target=fn\): a callable target"):
        gj.grad_cam(trunk, head, x, functools.partial(lambda out, k: out[:, :k], k=2))


def test_errors(setup):
    trunk, head, x = setup
    with pytest.raises(
        GradCamError, match=r"^grad_cam\(\.\.\., target=7\): index 7 is out of range for axis 1"
    ):
        gj.grad_cam(trunk, head, x, 7)
    with pytest.raises(GradCamError, match=r"got 2 entries for a batch of 3"):
        gj.grad_cam(trunk, head, x, jnp.array([0, 1]))
    with pytest.raises(GradCamError, match=r"target=None\): without a target"):
        gj.grad_cam(trunk, head, x)
    with pytest.raises(
        GradCamError, match=r"^grad_cam\(\.\.\., targets\[1\]=9\): index 9 is out of range"
    ):
        gj.grad_cam(trunk, head, x, targets=[0, (9,)])
    with pytest.raises(GradCamError, match=r"pass one of them"):
        gj.grad_cam(trunk, head, x, 1, targets=[1])
    with pytest.raises(
        GradCamError,
        match=r"target=array\(\[0, 5, 1\]\)\): class 5 is out "
        r"of range .* shape \(3, 5\)\. Use indices in \[0, 5\)",
    ):
        gj.grad_cam(trunk, head, x, jnp.array([0, 5, 1]))
    with pytest.raises(
        GradCamError,
        match=r"target=\.\.\.\): expected None, an int, .*got "
        r"ArrayImpl of shape \(3,\)",
    ):
        gj.grad_cam(trunk, head, x, jnp.array([0.0, 1.0, 2.0]))
    with pytest.raises(
        GradCamError,
        match=r"target=<lambda>\): a callable target must map "
        r"the output \(3, 5\) to .* shape \(3,\); it "
        r"returned \(3, 2\)\. Reduce",
    ):
        gj.grad_cam(trunk, head, x, lambda out: out[:, :2])
    with pytest.raises(
        GradCamError,
        match=r"^grad_cam\(\.\.\., targets=top_k\(9\)\): needs class scores of shape "
        r"\(B, N\) with N >= 9 classes, got \(3, 5\)",
    ):
        gj.grad_cam(trunk, head, x, targets=gj.top_k(9))
    with pytest.raises(GradCamError, match=r"targets=\[\]\): expected at least one target"):
        gj.grad_cam(trunk, head, x, targets=[])


def test_dlpack_round_trip_shares_memory():
    tensor = torch.randn(3, 4)
    array = gj.to_jax(tensor)
    np.testing.assert_array_equal(np.asarray(array), tensor.numpy())
    assert array.unsafe_buffer_pointer() == tensor.data_ptr()
    back = gj.to_torch(array)
    assert back.data_ptr() == tensor.data_ptr() and torch.equal(back, tensor)
    leaf = torch.ones(2, requires_grad=True)  # detached, not refused
    np.testing.assert_array_equal(np.asarray(gj.to_jax(leaf)), [1.0, 1.0])


def test_dlpack_shares_permuted_layouts_and_copies_what_jax_refuses():
    base = torch.randn(3, 4)
    transposed = gj.to_jax(base.T)
    assert transposed.unsafe_buffer_pointer() == base.data_ptr()
    np.testing.assert_array_equal(np.asarray(transposed), base.T.numpy())
    for strided in (base[:, 1:3], torch.randn(2, 1, 3).expand(2, 4, 3)):
        array = gj.to_jax(strided)
        assert array.unsafe_buffer_pointer() != strided.data_ptr()
        np.testing.assert_array_equal(np.asarray(array), strided.numpy())


def test_dlpack_helpers_are_reachable_from_the_package():
    import gradcam_func as gf

    assert gf.to_jax is gj.to_jax and gf.to_torch is gj.to_torch
