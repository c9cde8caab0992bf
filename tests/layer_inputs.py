"""Models whose layer input is also used outside the layer: the traps of
``attribute_to_layer_input``, written after the torchvision blocks they stand for.

Each factory returns ``(model, layer name, inputs)`` in float64, eval mode.
"""

import torch
from torch import nn


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: conv1's input also feeds the shortcut."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.block1 = BasicBlock(6)
        self.block2 = BasicBlock(6)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        return self.fc(self.block2(self.block1(torch.relu(self.stem(x)))).mean((2, 3)))


class Fire(nn.Module):
    """SqueezeNet's Fire: expand1x1 and expand3x3 read one tensor, in turn."""

    def __init__(self):
        super().__init__()
        self.squeeze = nn.Conv2d(6, 3, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(3, 4, 1)
        self.expand3x3 = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)


class SqueezeNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.fire = Fire()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.fire(torch.relu(self.stem(x))).mean((2, 3)))


class InceptionLike(nn.Module):
    """torchvision's InceptionA pattern: four branches read the block input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.branch1x1 = nn.Conv2d(6, 3, 1)
        self.branch5x5 = nn.Sequential(nn.Conv2d(6, 3, 1), nn.Conv2d(3, 3, 5, padding=2))
        self.branch3x3 = nn.Sequential(nn.Conv2d(6, 3, 1), nn.Conv2d(3, 3, 3, padding=1))
        self.branch_pool = nn.Conv2d(6, 3, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.tanh(self.stem(x))
        pooled = self.branch_pool(nn.functional.avg_pool2d(x, 3, 1, 1))
        out = torch.cat([self.branch1x1(x), self.branch5x5(x), self.branch3x3(x), pooled], 1)
        return self.fc(torch.relu(out).mean((2, 3)))


class PostNormEncoder(nn.Module):
    """nn.TransformerEncoderLayer: ``self_attn(x, x, x)``, and x again in the residual."""

    def __init__(self, norm_first=False):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.block = nn.TransformerEncoderLayer(
            8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first
        )
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.block(self.embed(x)).mean(1))


class InputSkip(nn.Module):
    """The model's own input reaches the head twice: through ``conv`` and around it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 5)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x) * x + x).mean((2, 3)))


class InplaceThenLayer(nn.Module):
    """An in-place op makes a new version of the tensor; an alias reads it beside the
    layer; ``contiguous`` returns the same tensor; ``chunk`` makes two at once."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.layer = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        h = self.stem(x)
        h.relu_()
        h = h.contiguous()
        a, b = h.chunk(2, dim=1)
        out = torch.cat([self.layer(a) * a, b + a], 1)
        return self.fc(torch.tanh(out).mean((2, 3)))


class ParameterInput(nn.Module):
    """A layer fed a parameter (learned queries), which the head also reads."""

    def __init__(self):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, 3, 4))
        self.layer = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        q = self.queries.expand(x.shape[0], -1, -1)
        return self.fc((torch.tanh(self.layer(self.queries)) + q * x).mean(1))


class TwoInputLayer(nn.Module):
    """A layer with two tensor inputs, one of which is also used outside it."""

    class Mix(nn.Module):
        def forward(self, a, b):
            return torch.tanh(a) * b

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.mix = self.Mix()
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        return self.fc((self.mix(a, b) + a * a).mean((2, 3)))


def _build(cls, layer, shape, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = cls(**kwargs).double().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
    return model, layer, torch.randn(*shape, dtype=torch.float64)


CASES = {
    "basic_block_conv1": lambda: _build(ResNetLike, "block2.conv1", (2, 3, 6, 6)),
    "basic_block": lambda: _build(ResNetLike, "block2", (2, 3, 6, 6)),
    "fire_expand3x3": lambda: _build(SqueezeNetLike, "fire.expand3x3", (2, 3, 6, 6)),
    "fire_expand1x1": lambda: _build(SqueezeNetLike, "fire.expand1x1", (2, 3, 6, 6)),
    "inception_branch5x5": lambda: _build(InceptionLike, "branch5x5", (2, 3, 6, 6)),
    "inception_branch3x3_conv": lambda: _build(InceptionLike, "branch3x3.0", (2, 3, 6, 6)),
    "self_attn_x_x_x": lambda: _build(PostNormEncoder, "block.self_attn", (2, 5, 4)),
    "pre_norm_norm1": lambda: _build(PostNormEncoder, "block.norm1", (2, 5, 4), norm_first=True),
    "model_input": lambda: _build(InputSkip, "conv", (2, 3, 5, 5)),
    "inplace_alias_chunk": lambda: _build(InplaceThenLayer, "layer", (2, 3, 5, 5)),
    "parameter_input": lambda: _build(ParameterInput, "layer", (2, 3, 4)),
    "two_input_layer": lambda: _build(TwoInputLayer, "mix", (2, 3, 5, 5)),
}
