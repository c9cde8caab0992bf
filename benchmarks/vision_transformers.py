"""gradcam_func on ViT-B/16 and Swin-T against raw autograd and the loop.

    python benchmarks/vision_transformers.py [--models vit_b swin_t mha_vit_b]
                                             [--ks 10 100] [--batch 8] [--repeats 3]
                                             [--device cpu]

All models at their published sizes with random weights (no download), eval mode,
batch 8 at 224x224, the classes 0..K-1. The CAM is taken on tokens with the embedding
as the channel axis (``channel_axis=-1``). ``vit_b`` and ``swin_t`` are HuggingFace's
(SDPA attention, transformers' default): ViT-B/16 at block 9 of 12 (``vit.layers.9``,
(B, 197, 768)); Swin-T in its third stage, the MLP of block 5 of 6
(``swin.encoder.layers.2.blocks.5.mlp``, (B, 196, 384)). ``mha_vit_b`` is ViT-B/16 in
torchvision's layout written in plain torch (``nn.MultiheadAttention`` in every block,
torchvision itself does not import beside this CPU build), at block 9's output. Methods,
in the same run on the same inputs:

- gradcam_func: ``cam(..., targets=range(K), channel_axis=-1)``, default chunking;
- raw autograd: a forward hook captures the activation, one forward, one
  ``torch.autograd.grad(logits, acts, cotangents, is_grads_batched=True)``;
- loop: torchcam's way, one forward, then one ``autograd.grad`` per class through the
  kept graph;
- with ``--grad-params``, also gradcam_func given the module's own parameters through
  ``params=`` (they require grad): the path gradcam_func avoids by detaching them,
  since ``nn.MultiheadAttention`` takes its fused kernels only for weights that do not
  require grad.

The three results are checked equal before timing; times are medians of ``--repeats``
interleaved calls. torch's warning that an op has no batching rule (raised inside the
raw-autograd baseline's batched gradient) is silenced here, and counted.
"""

import argparse
import time
from functools import partial
import warnings

import torch
import transformers as hf
from torch import nn

import gradcam_func as gf
from _timing import synchronize


class Logits(nn.Module):
    """The classifier's logits (B, N) as a Tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


class Block(nn.Module):
    """torchvision's ViT encoder block: pre-norm attention and MLP, both residual."""

    def __init__(self, dim=768, heads=12, hidden=3072):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class MhaViT(nn.Module):
    """ViT-B/16 as torchvision lays it out: (B, 3, 224, 224) -> (B, 1000)."""

    def __init__(self, dim=768, depth=12, classes=1000):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, dim, 16, stride=16)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 197, dim) * 0.02)
        self.layers = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.layers(x + self.pos_embedding)
        return self.head(self.ln(x)[:, 0])


def build(name, device):
    torch.manual_seed(0)
    if name == "mha_vit_b":
        return MhaViT().eval().to(device), "layers.9"
    if name == "vit_b":
        config = hf.ViTConfig(
            image_size=224,
            patch_size=16,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            num_labels=1000,
        )
        model, layer = hf.ViTForImageClassification(config), "model.vit.layers.9"
    else:
        config = hf.SwinConfig(
            image_size=224,
            patch_size=4,
            embed_dim=96,
            depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24],
            window_size=7,
            num_labels=1000,
        )
        model = hf.SwinForImageClassification(config)
        layer = "model.swin.encoder.layers.2.blocks.5.mlp"
    return Logits(model).eval().to(device), layer


def captured(model, layer, x):
    acts = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, out: acts.append(out))
    try:
        output = model(x)
    finally:
        handle.remove()
    return output, acts[0]


def formula(grads, acts):
    """Grad-CAM on tokens, channels last: (..., L, D) -> (..., 1, L)."""
    return (grads.mean(-2, keepdim=True) * acts).sum(-1)[..., None, :]


def ours(model, layer, x, k):
    return gf.cam(model, layer, x, targets=list(range(k)), channel_axis=-1)


def ours_grad_params(model, layer, x, k):
    params = dict(model.named_parameters())
    return gf.cam(model, layer, x, targets=list(range(k)), channel_axis=-1, params=params)


def raw_autograd(model, layer, x, k):
    output, acts = captured(model, layer, x)
    cotangents = torch.zeros(k, *output.shape, device=x.device)
    cotangents[torch.arange(k), :, torch.arange(k)] = 1
    (grads,) = torch.autograd.grad(output, acts, cotangents, is_grads_batched=True)
    return formula(grads, acts.detach())


def loop(model, layer, x, k):
    output, acts = captured(model, layer, x)
    cams = []
    for c in range(k):
        (grads,) = torch.autograd.grad(output[:, c].sum(), acts, retain_graph=c < k - 1)
        cams.append(formula(grads, acts.detach()))
    return torch.stack(cams)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["vit_b", "swin_t"])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grad-params", action="store_true")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, transformers {hf.__version__}, "
        f"{torch.get_num_threads()} threads, {args.device}; batch {args.batch}, 224x224, "
        f"medians of {args.repeats}"
    )
    print(
        "\n| model | layer | K | gradcam_func s | raw autograd s | loop s | ours / raw | "
        "loop / ours | no-batching-rule warnings (ours, raw) |"
        + (" ours, params requiring grad s | that / ours |" if args.grad_params else "")
    )
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if args.grad_params else ""))
    for name in args.models:
        model, layer = build(name, args.device)
        x = torch.randn(args.batch, 3, 224, 224, device=args.device)
        for k in args.ks:
            table = {
                "ours": partial(ours, model, layer, x, k),
                "raw": partial(raw_autograd, model, layer, x, k),
                "loop": partial(loop, model, layer, x, k),
            }
            if args.grad_params:
                table["grad_params"] = partial(ours_grad_params, model, layer, x, k)
            warned = {}
            results = {}
            for key, fn in table.items():
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    results[key] = fn()
                warned[key] = sum("performance drop" in str(w.message) for w in caught)
            reference = results["loop"]
            assert reference.abs().max() > 1e-4, "the reference is ~0"
            for key in set(table) - {"loop"}:
                torch.testing.assert_close(results[key], reference, rtol=1e-3, atol=1e-5)
            del results
            times = {key: [] for key in table}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(args.repeats):
                    for key, fn in table.items():
                        start = time.perf_counter()
                        fn()
                        synchronize(args.device)
                        times[key].append(time.perf_counter() - start)
            med = {key: sorted(ts)[len(ts) // 2] for key, ts in times.items()}
            extra = ""
            if args.grad_params:
                extra = f" {med['grad_params']:.2f} | {med['grad_params'] / med['ours']:.2f}× |"
            print(
                f"| {name} | {layer.removeprefix('model.')} | {k} | {med['ours']:.2f} | "
                f"{med['raw']:.2f} | {med['loop']:.2f} | {med['ours'] / med['raw']:.2f}× | "
                f"{med['loop'] / med['ours']:.2f}× | {warned['ours']}, {warned['raw']} |{extra}",
                flush=True,
            )


if __name__ == "__main__":
    main()
