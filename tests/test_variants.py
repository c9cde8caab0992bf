"""CAM variants: each against its paper's formula written out in NumPy, and properties."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import gradcam_func as gf
from gradcam_func import variants
from conftest import assert_arrays_close, assert_close
from test_ops import layer_arrays
from zoo import ZOO




def by_formula(method, acts, grads):
    """The variants with explicit loops over examples and channels: (B, 1, *S)."""
    out = np.zeros((acts.shape[0], 1) + acts.shape[2:])
    for b in range(acts.shape[0]):
        for c in range(acts.shape[1]):
            a, g = acts[b, c], grads[b, c]
            if method == "gradcam++":
                num = g ** 2
                den = 2 * g ** 2 + a.sum() * g ** 3
                alpha = np.where(den != 0, num / np.where(den != 0, den, 1), 0)
                out[b, 0] += (alpha * np.maximum(g, 0)).sum() * a
            elif method == "xgradcam":
                out[b, 0] += (g * a).sum() / (a.sum() + 1e-7) * a
            elif method == "hirescam":
                out[b, 0] += g * a
            elif method == "layercam":
                out[b, 0] += np.maximum(g, 0) * a
    return out


@pytest.mark.parametrize("method", ["gradcam++", "xgradcam", "hirescam", "layercam"])
@given(pair=layer_arrays(min_spatial=1))
def test_each_variant_matches_its_formula(method, pair):
    acts, grads = pair
    if method == "xgradcam":  # keep the denominator away from zero
        acts = np.abs(acts) + 0.1
    assert_arrays_close(variants.METHODS[method](acts, grads), by_formula(method, acts, grads))
    assert_arrays_close(variants.METHODS[method](torch.from_numpy(acts), torch.from_numpy(grads)).numpy(),
          by_formula(method, acts, grads))


@given(layer_arrays(min_spatial=1))
def test_hirescam_equals_gradcam_for_spatially_constant_gradients(pair):
    acts, grads = pair
    constant = np.broadcast_to(grads.mean(axis=tuple(range(2, grads.ndim)), keepdims=True),
                               grads.shape)
    assert_arrays_close(variants.hirescam_from(acts, constant), gf.ops.grad_cam_from(acts, constant))


@given(layer_arrays(min_spatial=1))
def test_layercam_is_non_negative_for_non_negative_activations(pair):
    acts, grads = pair
    assert (variants.layercam_from(np.abs(acts), grads) >= 0).all()


@given(layer_arrays(min_spatial=1), st.floats(0.1, 3))
def test_gradcam_pp_is_a_positive_channel_rescaling_of_gradcam(pair, level):
    """Spatially constant positive gradients g: alpha = 1 / (2 + sum(A) g), so the
    Grad-CAM++ weight is n * g / (2 + sum(A) g) = Grad-CAM's g times n / (2 + sum(A) g)."""
    acts, grads = pair
    acts = np.abs(acts)
    spatial = tuple(range(2, acts.ndim))
    g = np.broadcast_to(np.abs(grads.mean(axis=spatial, keepdims=True)) + level, acts.shape)
    n = np.prod(acts.shape[2:])
    factor = n / (2 + acts.sum(axis=spatial, keepdims=True) * g[(...,) + (slice(0, 1),) * len(spatial)])
    assert (factor > 0).all()
    assert_arrays_close(variants.gradcam_pp_weights(acts, g), factor * gf.ops.pool_gradients(g))


@pytest.mark.parametrize("method", list(variants.METHODS))
@pytest.mark.parametrize("name", ["plain_cnn", "residual", "conv1d"])
def test_multi_target_stacking_for_every_variant(method, name):
    case = ZOO[name](torch.float64)
    x = case.inputs[0]
    targets = [0, [1] * len(x), lambda out: out[:, 2] - out[:, 0]]
    stacked = gf.cam(case.model, case.layer, x, targets=targets, method=method, relu=True)
    for k, t in enumerate(targets):
        assert_close(stacked[k], gf.cam(case.model, case.layer, x, t, method=method, relu=True))


def test_gradcam_method_is_grad_cam():
    case = ZOO["residual"](torch.float64)
    assert_close(gf.cam(case.model, case.layer, case.inputs[0], targets=gf.top_k(2))[0],
                 gf.grad_cam(case.model, case.layer, case.inputs[0], targets=gf.top_k(2))[0])


def test_unknown_method():
    case = ZOO["plain_cnn"](torch.float64)
    with pytest.raises(gf.GradCamError, match=r"cam\(\.\.\., method='scorecam'\): expected "
                                              r"one of 'gradcam', 'gradcam\+\+'"):
        gf.cam(case.model, case.layer, case.inputs[0], 1, method="scorecam")
