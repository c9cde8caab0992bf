"""Hypothesis strategies: models with the layers worth explaining, inputs, targets.

Named as ``hypothesis.extra.numpy`` names them, for what they draw: ``models()`` a
``families.Case``, ``inputs_for(case)`` a batch, ``targets_for(classes, batch)`` one
target of any form ``grad_cam`` accepts, ``target_lists`` a ``targets=`` list, and
``activations_and_gradients()`` NumPy arrays for the pure ops (``gradcam_func.ops``). Random
weights and values come from seeds that hypothesis draws, so a failure shrinks (to a
smaller model, batch and seed) and replays.

    from hypothesis import given
    from gradcam_func.testing import strategies as gst

    @given(gst.explanation_problems())
    def test_my_cam(problem):
        check_all(my_cam, *problem)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays
except ImportError as error:  # pragma: no cover - checked in a subprocess test
    raise ImportError(
        "gradcam_func.testing.strategies needs hypothesis: pip install "
        "'gradcam_func[test]' (or pip install hypothesis)."
    ) from error

import numpy as np
import torch

from .._targets import TopK
from .._types import Inputs, Target
from .families import FAMILIES, Case

__all__ = [
    "seeds",
    "models",
    "layers_of",
    "inputs_for",
    "targets_for",
    "target_lists",
    "top_ks",
    "explanation_problems",
    "activations_and_gradients",
    "Score",
    "Contrast",
    "Probability",
]


def seeds() -> st.SearchStrategy[int]:
    """Seeds for torch's generators: small, so failures shrink to seed 0."""
    return st.integers(min_value=0, max_value=2**16)


@st.composite
def models(
    draw: st.DrawFn,
    families: Sequence[str] = tuple(FAMILIES),
    widths: st.SearchStrategy[int] = st.integers(2, 4),
    sizes: st.SearchStrategy[int] = st.integers(3, 6),
    classes: st.SearchStrategy[int] = st.integers(2, 5),
    dtype: torch.dtype = torch.float64,
) -> Case:
    """A ``families.Case``: a small eval-mode model of one of ``families``."""
    family = draw(st.sampled_from(families))
    case = FAMILIES[family](
        draw(seeds()), width=draw(widths), size=draw(sizes), classes=draw(classes)
    )
    return case.to(dtype)


def layers_of(case: Case) -> st.SearchStrategy[str]:
    """One of the case's layers worth explaining, by name."""
    return st.sampled_from(case.layers)


@st.composite
def inputs_for(
    draw: st.DrawFn,
    case: Case,
    batches: st.SearchStrategy[int] = st.integers(1, 3),
    dtype: torch.dtype = torch.float64,
    requires_grad: st.SearchStrategy[bool] = st.booleans(),
) -> Inputs:
    """Inputs for ``case``: a Tensor (or tuple) of ``batches`` examples, finite and of
    unit scale, sometimes with ``requires_grad`` set (an explainer must not care)."""
    generator = torch.Generator().manual_seed(draw(seeds()))
    inputs = case.inputs(draw(batches), generator, dtype)
    if draw(requires_grad):
        inputs = (
            tuple(x.requires_grad_() for x in inputs)
            if isinstance(inputs, tuple)
            else inputs.requires_grad_()
        )
    return inputs


class Score:
    """A callable target with a readable repr, so hypothesis reports it by name."""

    def __call__(self, out):
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{v}" for v in vars(self).values())
        return f"{type(self).__name__}({fields})"


class Contrast(Score):
    """``out[:, a] - out[:, b]``: what makes the model choose a over b."""

    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b

    def __call__(self, out):
        return out[:, self.a] - out[:, self.b]


class Probability(Score):
    """The softmax probability of class k: a non-linear score."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, out):
        return out.softmax(1)[:, self.k]


@st.composite
def targets_for(
    draw: st.DrawFn,
    classes: int,
    batch: int,
    forms: Sequence[str] = (
        "int",
        "tuple",
        "scalar_tensor",
        "per_example_tensor",
        "list",
        "list_of_tuples",
        "contrast",
        "probability",
    ),
) -> Target:
    """One target of any form grad_cam accepts, for a (B, classes) output."""
    form = draw(st.sampled_from(forms))
    cls = st.integers(0, classes - 1)
    if form == "int":
        return draw(cls)
    if form == "tuple":
        return (draw(cls),)
    if form == "scalar_tensor":
        return torch.tensor(draw(cls))
    per_example = draw(st.lists(cls, min_size=batch, max_size=batch))
    if form == "per_example_tensor":
        return torch.tensor(per_example)
    if form == "list":
        return per_example
    if form == "list_of_tuples":
        return [(c,) for c in per_example]
    if form == "contrast":
        return Contrast(draw(cls), draw(cls))
    return Probability(draw(cls))


def target_lists(
    classes: int, batch: int, min_size: int = 1, max_size: int = 4
) -> st.SearchStrategy[list[Any]]:
    """A ``targets=`` list of K targets of mixed forms."""
    return st.lists(targets_for(classes, batch), min_size=min_size, max_size=max_size)


def top_ks(classes: int) -> st.SearchStrategy[TopK]:
    """``top_k(k)`` with 1 <= k <= classes."""
    return st.integers(1, classes).map(TopK)


@st.composite
def explanation_problems(
    draw: st.DrawFn, families: Sequence[str] = tuple(FAMILIES), **model_options: Any
) -> tuple[torch.nn.Module, str, Inputs, Target]:
    """``(model, layer, inputs, target)``: everything ``check_all`` takes after the
    explainer, drawn together so the target fits the model and the batch."""
    case = draw(models(families, **model_options))
    inputs = draw(inputs_for(case, requires_grad=st.just(False)))
    batch = (inputs[0] if isinstance(inputs, tuple) else inputs).shape[0]
    layer = draw(layers_of(case))
    model: torch.nn.Module
    if case.extra_args:
        model, layer = _WithArgs(case.model, case.extra_args), f"model.{layer}"
    else:
        model = case.model
    return model, layer, inputs, draw(targets_for(case.classes, batch))


class _WithArgs(torch.nn.Module):
    """A model that takes extra non-tensor arguments, with them bound."""

    def __init__(self, model, extra_args):
        super().__init__()
        self.model, self.extra_args = model, extra_args

    def forward(self, *inputs):
        return self.model(*inputs, *self.extra_args)


@st.composite
def activations_and_gradients(
    draw: st.DrawFn, min_spatial: int = 0, max_spatial: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """A layer's activations and a score's gradients at them: two float64 NumPy arrays
    of one shape (B, C, *S), B in 1..3, C in 1..4, each spatial side in 1..4, values in
    [-10, 10]. Convert with ``torch.from_numpy`` or ``jnp.asarray`` for other backends."""
    values = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)
    spatial = draw(st.lists(st.integers(1, 4), min_size=min_spatial, max_size=max_spatial))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), *spatial)
    return (
        draw(arrays(np.float64, shape, elements=values)),
        draw(arrays(np.float64, shape, elements=values)),
    )
