"""Shared test settings: hypothesis profiles and the one tolerance table."""

import os

import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# One tolerance per dtype, used by every comparison of results computed two ways.
TOLERANCES = {
    torch.float16: dict(rtol=1e-2, atol=1e-3),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float64: dict(rtol=1e-9, atol=1e-9),
}

# Central differences in float64 with step 1e-6 against an analytic derivative.
FINITE_DIFFERENCES = dict(rtol=1e-5, atol=1e-8)


def assert_close(actual, expected):
    """torch.testing.assert_close with this suite's tolerance for the dtype."""
    torch.testing.assert_close(actual, expected, **TOLERANCES[expected.dtype])


def assert_arrays_close(actual, expected, dtype=torch.float64):
    """NumPy's assert_allclose on any arrays (torch, NumPy, JAX) with this table."""
    import numpy as np

    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), **TOLERANCES[dtype])
