"""Type aliases of the public API (shapes stay in the docstrings)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

import torch
from torch import nn

if TYPE_CHECKING:
    from ._targets import TopK

__all__ = [
    "Array",
    "Inputs",
    "Model",
    "Layer",
    "Layers",
    "Params",
    "Target",
    "Targets",
    "ScoreFn",
    "CamResult",
    "ChunkSize",
    "Autodiff",
    "Explainer",
]

Array = TypeVar("Array", bound=Any)
"""Any array the pure ops take: a torch Tensor, NumPy or JAX array; returned as given."""

Inputs = Union[torch.Tensor, tuple[torch.Tensor, ...]]
"""A batch: one Tensor, or a tuple of Tensors sharing dim 0."""

Model = Union[nn.Module, Callable[..., Any]]
"""The model: an nn.Module, or any function of the inputs whose layers are nn.Modules
(then ``layer`` is the module object)."""

Layer = Union[str, nn.Module]
"""A layer by its dotted name in ``model.named_modules()`` or as the module itself."""

Layers = Union[Layer, Sequence[Layer]]
"""One layer, or several (one CAM per layer)."""

Params = Mapping[str, torch.Tensor]
"""Parameters and buffers by name, as ``dict(model.named_parameters())`` gives them."""

ScoreFn = Callable[[Any], torch.Tensor]
"""A target as a function of the model's output (any structure) -> (B,) scores."""

Target = Union[None, int, tuple[int, ...], torch.Tensor, list[Any], ScoreFn]
"""One target in any of Captum's forms, or a callable score."""

Targets = Union[Sequence[Target], "TopK", Literal["all"], None]
"""K targets explained from one forward pass: a list, ``top_k(k)`` or ``"all"``."""

CamResult = Union[torch.Tensor, tuple[Any, ...], list[Any]]
"""A CAM (B, 1, *S), (K, B, 1, *S) for K targets, ``(cams, classes)`` with ``top_k``,
a tuple for tuple layer inputs, or a list with one entry per layer."""

ChunkSize = Union[int, Literal["auto"], None]
"""Targets per vmapped pullback: an int, ``"auto"`` (from the activation's size), or None
(all at once)."""

Autodiff = Literal["auto", "reverse", "forward"]
"""Reverse mode (one pullback per target), forward mode (one tangent per channel or
position), or the cheaper of the two."""

Explainer = Callable[..., Any]
"""An explainer with ``grad_cam``'s signature: ``(model, layer, inputs, target, ...)``."""
