"""Small models of the kinds CAMs are asked about, each with the layers worth explaining.

Every family is a function ``(seed, width, size) -> Case``: random weights from
``seed``, ``width`` channels, inputs of side ``size``. The models are in eval mode and
float64 (``Case.to`` converts), tiny enough for many hypothesis examples per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .._types import Inputs

__all__ = ["Case", "FAMILIES", "plain_cnn", "residual_cnn", "token_transformer", "two_input_cnn"]


@dataclass
class Case:
    """A model, the names of its layers worth explaining, and how to make its inputs.

    input_shapes: one (C, *S) per positional input (the batch axis is added);
    extra_args: non-tensor arguments passed after the inputs; classes: N, the width of
    the (B, N) output.
    """

    family: str
    model: nn.Module
    layers: list
    input_shapes: list
    classes: int
    extra_args: tuple = field(default_factory=tuple)

    def inputs(
        self, batch: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
    ) -> Inputs:
        """Inputs for ``batch`` examples: a Tensor, or a tuple for several inputs."""
        xs = tuple(
            torch.randn((batch, *shape), generator=generator, dtype=dtype)
            for shape in self.input_shapes
        )
        return xs if len(xs) > 1 else xs[0]

    def to(self, dtype: torch.dtype) -> Case:
        """The case with its model cast to ``dtype`` (in place, returned for chaining)."""
        self.model = self.model.to(dtype)
        return self


class _PlainCNN(nn.Module):
    def __init__(self, width, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


class _ResidualCNN(nn.Module):
    """conv -> BatchNorm -> in-place ReLU, twice, around a skip connection."""

    def __init__(self, width, classes):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = self.stem(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.head(torch.relu(out + x).mean((2, 3)))


class _TokenTransformer(nn.Module):
    """Tokens (B, T, 4) -> an encoder block -> mean over tokens -> classes."""

    def __init__(self, width, classes):
        super().__init__()
        self.embed = nn.Linear(4, 2 * width)
        self.block = nn.TransformerEncoderLayer(
            2 * width, 2, 4 * width, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.head(self.block(self.embed(x)).mean(1))


class _TwoInputCNN(nn.Module):
    """Two image inputs fused, and a non-tensor argument that scales the scores."""

    def __init__(self, width, classes):
        super().__init__()
        self.a = nn.Conv2d(3, width, 3, padding=1)
        self.b = nn.Conv2d(1, width, 1)
        self.fuse = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, classes)

    def forward(self, image, depth, scale):
        x = torch.tanh(self.fuse(self.a(image) * torch.sigmoid(self.b(depth))))
        return self.head(x.mean((2, 3))) * scale


def _seeded(cls, seed, width, classes):
    torch.manual_seed(seed)
    model = cls(width, classes).double().eval()
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.copy_(torch.rand(width, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(width, generator=generator) + 0.5)
    return model


def plain_cnn(seed: int, width: int = 3, size: int = 5, classes: int = 4) -> Case:
    """Two convolutions, global pooling, a linear head: input (B, 3, size, size),
    layers "conv1" and "conv2"; eval mode, float64, weights seeded by ``seed``."""
    return Case(
        "plain_cnn",
        _seeded(_PlainCNN, seed, width, classes),
        ["conv1", "conv2"],
        [(3, size, size)],
        classes,
    )


def residual_cnn(seed: int, width: int = 3, size: int = 5, classes: int = 4) -> Case:
    """Conv, BatchNorm and in-place ReLU around a skip connection: input
    (B, 3, size, size), layers "stem", "conv1", "bn2"; BatchNorm statistics seeded too."""
    return Case(
        "residual_cnn",
        _seeded(_ResidualCNN, seed, width, classes),
        ["stem", "conv1", "bn2"],
        [(3, size, size)],
        classes,
    )


def token_transformer(seed: int, width: int = 2, size: int = 5, classes: int = 4) -> Case:
    """A Transformer encoder block over tokens: input (B, size, 4), layers "embed"
    and "block" (token outputs (B, T, D)), mean over tokens before the head."""
    return Case(
        "token_transformer",
        _seeded(_TokenTransformer, seed, width, classes),
        ["embed", "block"],
        [(size, 4)],
        classes,
    )


def two_input_cnn(seed: int, width: int = 3, size: int = 5, classes: int = 4) -> Case:
    """Two image inputs (B, 3, size, size) and (B, 1, size, size) fused, plus a
    non-tensor argument (1.5, in ``Case.extra_args``) that scales the scores."""
    return Case(
        "two_input_cnn",
        _seeded(_TwoInputCNN, seed, width, classes),
        ["a", "fuse"],
        [(3, size, size), (1, size, size)],
        classes,
        (1.5,),
    )


FAMILIES = {f.__name__: f for f in (plain_cnn, residual_cnn, token_transformer, two_input_cnn)}
