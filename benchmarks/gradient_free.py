"""Ablation-CAM and Score-CAM: gradcam_func's batched split against the loops that
pytorch-grad-cam and torchcam run, written here in plain torch (same maths, same run).

    python benchmarks/gradient_free.py [--size 64] [--batch 8] [--layers layer4 layer3]
                                       [--device cpu]

ResNet-50 (plain torch, torchvision's layout, random weights), ``--size`` pixels.
- Ablation-CAM, pytorch-grad-cam's way: per image, per group of 32 channels, a full
  forward of 32 copies with the layer's output replaced; per target set, again.
  gradcam_func: under vmap over the channels, the trunk once per batch of channels.
- Score-CAM, torchcam's way: per class, every image's C masked copies in forwards of
  32. gradcam_func: the masked copies once, every target's scores from them.
Both sides use the same convention and are checked equal before timing. K=10 for the
loops is their K=1 time times 10 (they redo everything per target; marked "est.").
Peak memory: the RSS one call adds, in a fresh process.
"""

import argparse
import functools
import sys

import torch
import torch.nn.functional as F

import gradcam_func as gf
from _timing import once_seconds, peak_memory_bytes, report_peak
from resnet import resnet50

GIB = 2**30


def activations(model, layer, x):
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda *a: seen.append(a[2]))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def ablation_loop(model, layer, x, classes, group=32):
    """pytorch-grad-cam's AblationCAM: per target set, per image, groups of channels."""
    module = model.get_submodule(layer)
    acts = activations(model, layer, x)
    maps = []
    for cls in classes:
        with torch.no_grad():
            original = model(x)[:, cls]
        weights = torch.empty(acts.shape[:2], device=acts.device)
        for b in range(len(x)):
            a = acts[b]
            value = 0.0 if a.min() == 0 else a.min() - 1e7
            for start in range(0, a.shape[0], group):
                stop = min(start + group, a.shape[0])
                ablated = a[None].repeat(stop - start, 1, 1, 1)
                ablated[torch.arange(stop - start), torch.arange(start, stop)] = value
                handle = module.register_forward_hook(lambda *_, ablated=ablated: ablated)
                with torch.no_grad():
                    scores = model(x[b : b + 1].expand(stop - start, -1, -1, -1))[:, cls]
                handle.remove()
                weights[b, start:stop] = (original[b] - scores) / original[b]
        maps.append((weights[..., None, None] * acts).sum(1, keepdim=True))
    return torch.stack(maps)


def score_loop(model, layer, x, classes, group=32):
    """torchcam's ScoreCAM: per class, all masked copies again."""
    acts = activations(model, layer, x)
    low = acts.flatten(2).min(-1).values[..., None, None]
    high = acts.flatten(2).max(-1).values[..., None, None]
    masks = F.interpolate(
        (acts - low) / (high - low + 1e-8), size=x.shape[-2:], mode="bilinear", align_corners=False
    )
    b, c = acts.shape[:2]
    masked = (masks.unsqueeze(2) * x.unsqueeze(1)).reshape(b * c, *x.shape[1:])
    owner = torch.arange(b, device=x.device).repeat_interleave(c)
    maps = []
    with torch.no_grad():
        logits = model(x)
        for cls in classes:
            gains = torch.cat(
                [
                    model(masked[i : i + group])[:, cls] - logits[owner[i : i + group], cls]
                    for i in range(0, b * c, group)
                ]
            )
            weights = gains.view(b, c).softmax(-1)
            maps.append((weights[..., None, None] * acts).sum(1, keepdim=True))
    return torch.stack(maps)


def ours(method, model, layer, x, classes, batch_size):
    convention = "pytorch-grad-cam" if method == "ablationcam" else "torchcam"
    return gf.cam(
        model,
        layer,
        x,
        targets=classes,
        method=method,
        convention=convention,
        batch_size=batch_size,
    )


def setup(size, batch, device):
    torch.manual_seed(0)
    return resnet50().eval().to(device), torch.rand(batch, 3, size, size, device=device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--layers", nargs="+", default=["layer4", "layer3"])
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peak-of", nargs="+")
    args = parser.parse_args()
    if args.peak_of:
        method, side, layer, k, size, batch, chunk, device = args.peak_of
        model, x = setup(int(size), int(batch), device)
        classes = list(range(int(k)))
        if side == "ours":
            report_peak(lambda: ours(method, model, layer, x, classes, int(chunk)), device)
        else:
            loop = ablation_loop if method == "ablationcam" else score_loop
            report_peak(lambda: loop(model, layer, x, classes), device)
        return
    model, x = setup(args.size, args.batch, args.device)
    rows = []
    for method, loop, who in [
        ("ablationcam", ablation_loop, "pytorch-grad-cam's loop"),
        ("scorecam", score_loop, "torchcam's loop"),
    ]:
        for layer in args.layers:
            torch.testing.assert_close(
                ours(method, model, layer, x, [3], args.chunk),
                loop(model, layer, x, [3]),
                rtol=1e-3,
                atol=1e-3,
            )
            theirs_one = once_seconds(functools.partial(loop, model, layer, x, [3]))
            for k in (1, 10):
                classes = list(range(k))
                mine = once_seconds(
                    functools.partial(ours, method, model, layer, x, classes, args.chunk)
                )
                theirs = theirs_one * k
                memory = (
                    [
                        peak_memory_bytes(
                            __file__.split("/")[-1],
                            method,
                            side,
                            layer,
                            k,
                            args.size,
                            args.batch,
                            args.chunk,
                            args.device,
                        )
                        / GIB
                        for side in ("ours", "loop")
                    ]
                    if k == 1
                    else [None, None]
                )
                rows.append((method, layer, k, mine, theirs, who, memory))
    print(
        f"ResNet-50, {args.size}x{args.size}, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, {args.device}, gradcam_func batch_size={args.chunk}"
    )
    print(
        "| method | layer | K | gradcam_func (s) | the libraries' loop (s) | ratio | "
        "peak GiB (ours / loop) |"
    )
    print("|---|---|---|---|---|---|---|")
    for method, layer, k, mine, theirs, who, memory in rows:
        est = "" if k == 1 else " est."
        peak = "" if memory[0] is None else f"{memory[0]:.2f} / {memory[1]:.2f}"
        print(
            f"| {method} | {layer} | {k} | {mine:.1f} | {theirs:.1f}{est} ({who}) | "
            f"{theirs / mine:.1f}x | {peak} |"
        )


if __name__ == "__main__":
    sys.exit(main())
