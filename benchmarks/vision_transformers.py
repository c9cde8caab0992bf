"""gradcam_func on HuggingFace ViT-B/16 and Swin-T against raw autograd and the loop.

    python benchmarks/vision_transformers.py [--models vit_b swin_t] [--ks 10 100]
                                             [--batch 8] [--repeats 3] [--device cpu]

Both models from their published sizes with random weights (no download), SDPA
attention (transformers' default), eval mode, batch 8 at 224x224, the classes 0..K-1.
The CAM is taken on tokens with the embedding as the channel axis (``channel_axis=-1``):
ViT-B/16 at block 9 of 12 (``vit.layers.9``, (B, 197, 768)); Swin-T in its third stage,
the MLP of block 5 of 6 (``swin.encoder.layers.2.blocks.5.mlp``, (B, 196, 384)). Methods, in the
same run on the same inputs:

- gradcam_func: ``cam(..., targets=range(K), channel_axis=-1)``, default chunking;
- raw autograd: a forward hook captures the activation, one forward, one
  ``torch.autograd.grad(logits, acts, cotangents, is_grads_batched=True)``;
- loop: torchcam's way, one forward, then one ``autograd.grad`` per class through the
  kept graph.

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


def build(name, device):
    torch.manual_seed(0)
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
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, transformers {hf.__version__}, "
        f"{torch.get_num_threads()} threads, {args.device}; batch {args.batch}, 224x224, "
        f"medians of {args.repeats}"
    )
    print(
        "\n| model | layer | K | gradcam_func s | raw autograd s | loop s | ours / raw | "
        "loop / ours | no-batching-rule warnings (ours, raw) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model, layer = build(name, args.device)
        x = torch.randn(args.batch, 3, 224, 224, device=args.device)
        for k in args.ks:
            table = {
                "ours": partial(ours, model, layer, x, k),
                "raw": partial(raw_autograd, model, layer, x, k),
                "loop": partial(loop, model, layer, x, k),
            }
            warned = {}
            results = {}
            for key, fn in table.items():
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    results[key] = fn()
                warned[key] = sum("performance drop" in str(w.message) for w in caught)
            reference = results["loop"]
            assert reference.abs().max() > 1e-4, "the reference is ~0"
            for key in ("ours", "raw"):
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
            print(
                f"| {name} | {layer.removeprefix('model.')} | {k} | {med['ours']:.2f} | "
                f"{med['raw']:.2f} | {med['loop']:.2f} | {med['ours'] / med['raw']:.2f}× | "
                f"{med['loop'] / med['ours']:.2f}× | {warned['ours']}, {warned['raw']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
