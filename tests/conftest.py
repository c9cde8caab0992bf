"""Shared test settings: hypothesis profiles, the one tolerance table, and fixtures."""

import os
import re

import pytest
import torch
from hypothesis import settings

import gradcam_func as gf

settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# mutmut's stats run (which tests reach which mutated function, `make mutate`) records
# each call through a ContextVar, which Dynamo cannot trace: there, and only there,
# torch.compile is off, and fullgraph with it (it would find no graph), so compiled tests
# run eagerly and record their calls. Each mutant itself is then tested compiled.
MUTMUT_STATS = os.environ.get("MUTANT_UNDER_TEST") == "stats"
if MUTMUT_STATS:
    torch._dynamo.config.disable = True
FULLGRAPH = not MUTMUT_STATS

# One tolerance per dtype, used by every comparison of results computed two ways.
TOLERANCES = {
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
    torch.float16: dict(rtol=1e-2, atol=1e-3),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float64: dict(rtol=1e-9, atol=1e-9),
}

# Central differences in float64 with step 1e-6 against an analytic derivative.
FINITE_DIFFERENCES = dict(rtol=1e-5, atol=1e-8)


def exactly(message):
    """A ``pytest.raises(match=...)`` pattern for this whole message and nothing else."""
    return "^" + re.escape(message) + "$"


def assert_close(actual, expected):
    """torch.testing.assert_close with this suite's tolerance for the dtype."""
    torch.testing.assert_close(actual, expected, **TOLERANCES[expected.dtype])


def assert_not_zero(reference):
    """Fail when a reference (a Tensor or a tuple of them) is ~0 everywhere: matching
    it would prove nothing. ~0 means no entry above 10x the dtype's atol, so a 10% error in the
    largest entry would go unseen."""
    for r in reference if isinstance(reference, tuple) else (reference,):
        largest = r.detach().abs().max().item()
        assert largest > 10 * TOLERANCES[r.dtype]["atol"], (
            f"the reference is ~0 (largest magnitude {largest:.3g}); a match proves nothing"
        )


def assert_matches(actual, expected):
    """``actual`` equals a non-zero reference: Tensors, or tuples of them, alike."""
    assert_not_zero(expected)
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), type(actual)
        for a, e in zip(actual, expected, strict=True):
            assert_close(a, e)
    else:
        assert isinstance(actual, torch.Tensor), type(actual)
        assert_close(actual, expected)


def assert_arrays_close(actual, expected, dtype=torch.float64):
    """NumPy's assert_allclose on any arrays (torch, NumPy, JAX) with this table."""
    import numpy as np

    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), **TOLERANCES[dtype])


# What a call must leave as it found: state, inputs and hooks.


def snapshot(model, inputs):
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    return state, tuple(x.clone() for x in inputs)


def assert_unchanged(model, inputs, saved):
    state, saved_inputs = saved
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    for x, saved_x in zip(inputs, saved_inputs, strict=True):
        assert torch.equal(x, saved_x)


def hooks_of(model):
    return [
        (name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for name, m in model.named_modules()
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
    ]


@pytest.fixture(params=["a layer", "a list of one layer"])
def cam_at(request):
    """gf.cam at one layer, given as is or as a list of one (its one map unwrapped): the
    list's calls must get every option that the single call gets."""

    def call(model, layer, *args, **kwargs):
        if request.param == "a layer":
            return gf.cam(model, layer, *args, **kwargs)
        maps = gf.cam(model, [layer], *args, **kwargs)
        assert isinstance(maps, list) and len(maps) == 1, type(maps)
        return maps[0]

    return call
