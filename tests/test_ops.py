"""Properties of the pure ops, on torch and NumPy arrays."""

import numpy as np
import torch
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from conftest import assert_arrays_close
from gradcam_func import ops
from gradcam_func.testing.strategies import activations_and_gradients

FLOATS = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)


def reference_grad_cam(acts, grads, relu=False, sum_channels=True):
    """Grad-CAM written out with explicit loops over examples and channels."""
    out = np.zeros_like(acts)
    for b in range(acts.shape[0]):
        for c in range(acts.shape[1]):
            weight = grads[b, c].mean() if acts.ndim > 2 else grads[b, c]
            out[b, c] = weight * acts[b, c]
    if sum_channels:
        out = out.sum(axis=1, keepdims=True)
    return np.maximum(out, 0) if relu else out


@given(activations_and_gradients(), st.booleans(), st.booleans())
def test_grad_cam_from_equals_a_loop_formula(pair, relu, sum_channels):
    acts, grads = pair
    assert_arrays_close(
        ops.grad_cam_from(acts, grads, relu=relu, sum_channels=sum_channels),
        reference_grad_cam(acts, grads, relu, sum_channels),
    )


@given(activations_and_gradients(), st.booleans(), st.booleans())
def test_torch_and_numpy_agree(pair, relu, sum_channels):
    acts, grads = pair
    got = ops.grad_cam_from(
        torch.from_numpy(acts), torch.from_numpy(grads), relu=relu, sum_channels=sum_channels
    )
    assert isinstance(got, torch.Tensor)
    assert_arrays_close(
        got.numpy(), ops.grad_cam_from(acts, grads, relu=relu, sum_channels=sum_channels)
    )


@given(
    st.integers(1, 3),
    st.integers(1, 4),
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
    FLOATS,
)
def test_pooling_a_constant_gives_the_constant(batch, channels, spatial, value):
    grads = np.full((batch, channels, *spatial), value)
    pooled = ops.pool_gradients(grads)
    assert pooled.shape == (batch, channels) + (1,) * len(spatial)
    assert_arrays_close(pooled, np.full(pooled.shape, value))


@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 5)), elements=FLOATS))
def test_pooling_leaves_rank_two_unchanged(grads):
    assert ops.pool_gradients(grads) is grads


@given(activations_and_gradients(), FLOATS, FLOATS)
def test_linear_in_gradients(pair, a, b):
    acts, grads = pair
    other = np.roll(grads, 1)
    assert_arrays_close(
        ops.grad_cam_from(acts, a * grads + b * other),
        a * ops.grad_cam_from(acts, grads) + b * ops.grad_cam_from(acts, other),
    )


@given(activations_and_gradients(), FLOATS, FLOATS)
def test_linear_in_activations(pair, a, b):
    acts, grads = pair
    other = np.roll(acts, 1)
    assert_arrays_close(
        ops.grad_cam_from(a * acts + b * other, grads),
        a * ops.grad_cam_from(acts, grads) + b * ops.grad_cam_from(other, grads),
    )


@given(activations_and_gradients(), st.randoms(use_true_random=False))
def test_invariant_under_a_channel_permutation(pair, rng):
    acts, grads = pair
    order = list(range(acts.shape[1]))
    rng.shuffle(order)
    assert_arrays_close(
        ops.grad_cam_from(acts[:, order], grads[:, order]), ops.grad_cam_from(acts, grads)
    )


@given(activations_and_gradients(min_spatial=1), st.data())
def test_equivariant_under_a_spatial_flip(pair, data):
    acts, grads = pair
    axis = data.draw(st.integers(2, acts.ndim - 1))
    assert_arrays_close(
        ops.grad_cam_from(np.flip(acts, axis), np.flip(grads, axis)),
        np.flip(ops.grad_cam_from(acts, grads), axis),
    )


@given(activations_and_gradients())
def test_unsummed_channels_sum_to_the_summed_cam(pair):
    acts, grads = pair
    assert_arrays_close(
        ops.grad_cam_from(acts, grads, sum_channels=False).sum(axis=1, keepdims=True),
        ops.grad_cam_from(acts, grads),
    )


@given(arrays(np.float64, st.integers(1, 20), elements=FLOATS))
def test_relu_is_idempotent_and_non_negative(x):
    once = ops.relu(x)
    assert (once >= 0).all()
    assert_arrays_close(ops.relu(once), once)
    assert_arrays_close(once, np.where(x > 0, x, 0))


def test_relu_gradient_matches_torch_including_zero():
    x = torch.tensor([-1.0, 0.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    (ours,) = torch.autograd.grad(ops.relu(x).sum(), x)
    (theirs,) = torch.autograd.grad(torch.nn.functional.relu(x).sum(), x)
    torch.testing.assert_close(ours, theirs)
    assert ours[1] == 0


@given(activations_and_gradients())
def test_ops_run_under_torch_vmap(pair):
    acts, grads = (torch.from_numpy(a) for a in pair)
    mapped = torch.func.vmap(lambda a, g: ops.grad_cam_from(a[None], g[None])[0])(acts, grads)
    assert_arrays_close(mapped.numpy(), ops.grad_cam_from(pair[0], pair[1]))


@given(activations_and_gradients())
def test_weight_activations_sums_channels_unless_told_not_to(pair):
    weights, acts = pair
    loop = np.stack([weights[:, c] * acts[:, c] for c in range(acts.shape[1])], axis=1)
    assert_arrays_close(ops.weight_activations(weights, acts), loop.sum(axis=1, keepdims=True))
    assert_arrays_close(ops.weight_activations(weights, acts, sum_channels=False), loop)


@given(activations_and_gradients(min_spatial=1))
def test_normalize_equals_a_loop_over_maps(pair):
    cams, _ = pair
    expected = np.zeros_like(cams)
    for b in range(cams.shape[0]):
        for c in range(cams.shape[1]):
            low, high = cams[b, c].min(), cams[b, c].max()
            if high - low > 1e-12:
                expected[b, c] = (cams[b, c] - low) / (high - low)
    assert_arrays_close(ops.normalize(cams), expected)


def test_normalize_takes_a_two_dimensional_array_as_one_map():
    cam = np.array([[1.0, 3.0], [5.0, 2.0]])
    assert_arrays_close(ops.normalize(cam), (cam - 1.0) / 4.0)
    assert_arrays_close(ops.normalize(np.array([2.0, 4.0, 3.0])), np.array([0.0, 1.0, 0.5]))
