"""gradcam_func.ops on JAX arrays, and under jax.jit, jax.vmap and jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from conftest import assert_arrays_close
from gradcam_func import ops
from gradcam_func.testing.strategies import activations_and_gradients
from test_ops import reference_grad_cam


@pytest.fixture(autouse=True)
def float64():
    """These properties compare with NumPy in float64; only this file turns x64 on."""
    with jax.enable_x64(True):
        yield


# Each new shape compiles anew in JAX, so these properties draw fewer examples.
FEW = settings(max_examples=8)


@FEW
@given(activations_and_gradients())
def test_jax_arrays_give_numpys_numbers(pair):
    acts, grads = pair
    got = ops.grad_cam_from(jnp.asarray(acts), jnp.asarray(grads), relu=True)
    assert isinstance(got, jax.Array)
    assert_arrays_close(got, reference_grad_cam(acts, grads, relu=True))
    assert_arrays_close(ops.normalize(jnp.asarray(acts)), ops.normalize(acts))


@FEW
@given(activations_and_gradients())
def test_under_jit(pair):
    acts, grads = (jnp.asarray(a) for a in pair)
    jitted = jax.jit(lambda a, g: ops.grad_cam_from(a, g, sum_channels=False))
    assert_arrays_close(jitted(acts, grads), reference_grad_cam(*pair, sum_channels=False))


@FEW
@given(activations_and_gradients())
def test_under_vmap(pair):
    acts, grads = (jnp.asarray(a) for a in pair)
    mapped = jax.vmap(lambda a, g: ops.grad_cam_from(a[None], g[None])[0])(acts, grads)
    assert_arrays_close(mapped, reference_grad_cam(*pair))


@FEW
@given(activations_and_gradients(min_spatial=1))
def test_under_grad(pair):
    acts, grads = pair
    # d/d acts of sum(grad_cam_from(acts, grads)) is the pooled gradient, broadcast
    got = jax.grad(lambda a: ops.grad_cam_from(a, jnp.asarray(grads)).sum())(jnp.asarray(acts))
    pooled = grads.mean(axis=tuple(range(2, grads.ndim)), keepdims=True)
    assert_arrays_close(got, np.broadcast_to(pooled, acts.shape))


def test_relu_gradient_at_zero_is_zero():
    grad = jax.grad(lambda x: ops.relu(x).sum())(jnp.array([-1.0, 0.0, 2.0]))
    assert_arrays_close(grad, [0.0, 0.0, 1.0])
