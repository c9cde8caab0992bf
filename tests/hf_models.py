"""Tiny HuggingFace ``transformers`` models with random weights, nothing downloaded.

Each entry of ``ARCHS`` is one line: how to build the model, the input it takes, a
layer whose output is explained (a stage or a block), and a layer whose *input* is also
used outside it (a residual block's first convolution, whose input feeds the shortcut;
an attention projection, whose input the sibling projections and the residual read).
Weights get PyTorch's default initialisation (HuggingFace's std-0.02 init makes a deep
tiny net's activations vanish), and BatchNorm running statistics are those of one batch
of random inputs (with unit statistics, a deep MobileNetV2 forgets its input), so no
CAM is ~0.
"""

from dataclasses import dataclass
from typing import Callable

import torch
import transformers as hf
from torch import nn


@dataclass
class Arch:
    build: Callable
    input_shape: tuple
    output_layer: str
    input_layer: str
    tokens: bool = False  # activations (B, T, D): explained with channel_axis=-1
    text: bool = False  # input: token ids


def _image(config_cls, model_cls, **config):
    def build():
        return model_cls(config_cls(num_channels=3, num_labels=5, **config))

    return build


ARCHS = {
    "resnet": Arch(
        _image(
            hf.ResNetConfig,
            hf.ResNetForImageClassification,
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            layer_type="basic",
        ),
        (2, 3, 32, 32),
        "resnet.encoder.stages.1",
        "resnet.encoder.stages.1.layers.0.layer.0",
    ),
    "convnext": Arch(
        _image(
            hf.ConvNextConfig,
            hf.ConvNextForImageClassification,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            num_stages=2,
            patch_size=2,
        ),
        (2, 3, 16, 16),
        "convnext.encoder.stages.1",
        "convnext.encoder.stages.1.layers.0.dwconv",
    ),
    "regnet": Arch(
        _image(
            hf.RegNetConfig,
            hf.RegNetForImageClassification,
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 2],
            groups_width=4,
        ),
        (2, 3, 32, 32),
        "regnet.encoder.stages.1",
        "regnet.encoder.stages.1.layers.1.layer.0",
    ),
    "mobilenetv2": Arch(
        _image(
            hf.MobileNetV2Config,
            hf.MobileNetV2ForImageClassification,
            image_size=32,
            depth_multiplier=0.25,
        ),
        (2, 3, 32, 32),
        "mobilenet_v2.layer.4",
        "mobilenet_v2.layer.4.expand_1x1",
    ),
    "vit": Arch(
        _image(
            hf.ViTConfig,
            hf.ViTForImageClassification,
            image_size=16,
            patch_size=4,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
        (2, 3, 16, 16),
        "vit.layers.0.mlp.fc1",
        "vit.layers.1.attention.q_proj",
        tokens=True,
    ),
    "swin": Arch(
        _image(
            hf.SwinConfig,
            hf.SwinForImageClassification,
            image_size=16,
            patch_size=2,
            embed_dim=8,
            depths=[1, 1],
            num_heads=[2, 2],
            window_size=2,
            drop_path_rate=0.0,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
        (2, 3, 16, 16),
        "swin.encoder.layers.0.blocks.0.mlp.fc1",
        "swin.encoder.layers.1.blocks.0.attention.q_proj",
        tokens=True,
    ),
    "bert": Arch(
        lambda: hf.BertForSequenceClassification(
            hf.BertConfig(
                vocab_size=50,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                num_labels=5,
                max_position_embeddings=32,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            )
        ),
        (2, 7),
        "bert.encoder.layer.0",
        "bert.encoder.layer.1.attention.self.query",
        tokens=True,
        text=True,
    ),
}

CONVOLUTIONAL = [name for name, arch in ARCHS.items() if not arch.tokens]


def build(name, seed=0):
    """``(model, inputs)`` for ``ARCHS[name]``, in eval mode, float32."""
    arch = ARCHS[name]
    torch.manual_seed(seed)
    model = arch.build()
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = 1.0  # the next forward's batch statistics become the running ones
    with torch.no_grad():
        model.train()(_inputs(arch, batch=8))
    for norm in norms:
        norm.momentum = 0.1
        norm.num_batches_tracked.zero_()
    return model.eval(), _inputs(arch, batch=arch.input_shape[0])


def _inputs(arch, batch):
    shape = (batch, *arch.input_shape[1:])
    return torch.randint(0, 50, shape) if arch.text else torch.randn(*shape)


class Logits(nn.Module):
    """A HuggingFace model returning ``.logits``: what Captum needs to explain it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        return self.model(*inputs).logits
