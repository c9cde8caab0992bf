"""Small models of every kind the parity tests cover, built fresh for each test.

Each factory takes a dtype and returns a ``Case``: the model (eval mode), the layer
to explain, the inputs, the additional forward args, and a valid class target.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Case:
    model: nn.Module
    layer: nn.Module
    inputs: tuple
    args: tuple = ()
    target: object = 1


class PlainCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


class Residual(nn.Module):
    """conv -> BatchNorm -> ReLU(inplace) with a skip connection, then a head."""

    def __init__(self, inplace=True):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=inplace)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        out = self.relu(self.bn(self.conv(x)))
        out = self.relu(out + x)
        return self.head(out.mean((2, 3)))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(2, 4, 3, padding=1)
        self.fuse = nn.Conv2d(4, 6, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, a, b):
        x = torch.relu(self.fuse(self.conv_a(a) * self.conv_b(b)))
        return self.fc(x.mean((2, 3)))


class ExtraArgs(nn.Module):
    """forward(x, shift, scale, flip): a tensor and two non-tensor arguments."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x, shift, scale, flip):
        h = torch.tanh(self.conv(x + shift) * scale)
        if flip:
            h = h.flip(-1)
        return self.fc(h.mean((2, 3)))


class Split(nn.Module):
    """A layer whose output is a tuple of two tensors."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 3, 3, padding=1)
        self.b = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        return self.a(x), self.b(x)


class TupleOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.split = Split()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        a, b = self.split(torch.relu(self.stem(x)))
        return self.fc(torch.cat([a.mean((2, 3)), torch.sigmoid(b).mean((2, 3))], 1))


class Conv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(2, 6, 5, padding=2)
        self.conv2 = nn.Conv1d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.amax(-1))


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.block = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.block(self.embed(x)).mean(1))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(6, 10)
        self.act = nn.GELU()
        self.out = nn.Linear(10, 4)

    def forward(self, x):
        return self.out(self.act(self.hidden(x)))


def _make(cls, dtype, seed=0):
    torch.manual_seed(seed)
    return cls().to(dtype).eval()


def plain_cnn(dtype):
    m = _make(PlainCNN, dtype)
    return Case(m, m.conv2, (torch.randn(3, 3, 8, 8, dtype=dtype),))


def residual(dtype):
    m = _make(Residual, dtype)
    with torch.no_grad():  # non-trivial running statistics
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return Case(m, m.bn, (torch.randn(2, 3, 6, 6, dtype=dtype),), target=2)


def two_inputs(dtype):
    m = _make(TwoInputs, dtype)
    inputs = (torch.randn(2, 3, 5, 5, dtype=dtype), torch.randn(2, 2, 5, 5, dtype=dtype))
    return Case(m, m.fuse, inputs, target=0)


def extra_args(dtype):
    m = _make(ExtraArgs, dtype)
    shift = torch.randn(1, 3, 1, 1, dtype=dtype)
    return Case(m, m.conv, (torch.randn(3, 3, 6, 6, dtype=dtype),), (shift, 1.5, True), 3)


def tuple_output(dtype):
    m = _make(TupleOutput, dtype)
    return Case(m, m.split, (torch.randn(2, 3, 6, 6, dtype=dtype),), target=2)


def conv1d(dtype):
    m = _make(Conv1d, dtype)
    return Case(m, m.conv2, (torch.randn(3, 2, 12, dtype=dtype),))


def transformer(dtype):
    m = _make(Transformer, dtype)
    return Case(m, m.block, (torch.randn(2, 5, 4, dtype=dtype),), target=2)


def mlp(dtype):
    m = _make(MLP, dtype)
    return Case(m, m.hidden, (torch.randn(4, 6, dtype=dtype),), target=0)


ZOO = {
    f.__name__: f
    for f in (plain_cnn, residual, two_inputs, extra_args, tuple_output, conv1d, transformer, mlp)
}
