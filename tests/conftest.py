"""Shared test settings: hypothesis profiles and the one tolerance table."""

import os

import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# One tolerance per dtype, used by every comparison of results computed two ways.
TOLERANCES = {
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float64: dict(rtol=1e-9, atol=1e-11),
}


def assert_close(actual, expected):
    """torch.testing.assert_close with this suite's tolerance for the dtype."""
    torch.testing.assert_close(actual, expected, **TOLERANCES[expected.dtype])
