"""gradcam_func against pytorch-grad-cam's and torchcam's GradCAM (and Captum's loop).

    make anchors        # builds build/anchors-venv (torchvision, grad-cam, torchcam), runs this
    python benchmarks/anchors.py [--models resnet50 vit_b_16] [--ks 1 10] [--batch 8]
                                 [--repeats 3] [--device cpu]

torchvision's ResNet-50 (``layer4``) and ViT-B/16 (the last encoder block's ``ln_1``,
tokens laid on their 14x14 grid), random weights (the ViT's zero-initialised head
redrawn, or every map would be 0), batch 8 at 224x224, the classes 0..K-1 for every
image. Each library is used the way its documentation shows:

- pytorch-grad-cam: ``GradCAM(model, target_layers=[layer])``, one call per class with
  a ``ClassifierOutputTarget`` per image (it runs a forward and a backward each time,
  then applies ReLU, scales each map to [0, 1], resizes it to the input and scales it
  again);
- torchcam: ``GradCAM(model, layer)``, one forward, then one extractor call per class
  on the kept graph (ReLU and [0, 1] scaling at the layer's resolution); its GradCAM
  takes (B, C, H, W) maps only, so it has no ViT row;
- Captum: ``LayerGradCam(model, layer).attribute(x, k)`` per class (ResNet-50 only:
  Captum has no token grid);
- gradcam_func: one ``grad_cam`` (``cam`` with the token grid for the ViT) for all K
  classes with ``relu=True``, followed by the same post-processing as the library it is
  compared with (``normalize``, ``interpolate`` to 224 bilinear, ``normalize``), timed
  with it.

Before timing, each pair's maps are compared; the largest difference is printed. Each
library's hooks live only while its own call is timed. Times are medians of
``--repeats`` interleaved single calls.
"""

import argparse
from functools import partial

import numpy as np
import torch
import torchvision
from captum.attr import LayerGradCam
from pytorch_grad_cam import GradCAM as PgcGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchcam.methods import GradCAM as TorchcamGradCAM

import gradcam_func as gf
from _timing import once_seconds


def build(name, device):
    """(model, layer name, the layer module, token options or None)."""
    torch.manual_seed(0)
    if name == "resnet50":
        model = torchvision.models.resnet50(weights=None)
        layer, tokens = "layer4", None
    else:
        model = torchvision.models.vit_b_16(weights=None)
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
        layer, tokens = "encoder.layers.encoder_layer_11.ln_1", (14, 14)
    model = model.eval().to(device)
    return model, layer, model.get_submodule(layer), tokens


def to_grid(tokens):
    """pytorch-grad-cam's reshape for ViTs: drop the class token, (B, D, 14, 14)."""
    b, n, d = tokens.shape
    side = int((n - 1) ** 0.5)
    return tokens[:, 1:, :].reshape(b, side, side, d).permute(0, 3, 1, 2)


def ours(model, layer, x, classes, tokens, post):
    """gradcam_func's maps for every class, then ``post`` ("pgc", "torchcam" or "raw")."""
    options = dict(targets=classes, relu=True)
    if tokens is not None:
        options.update(channel_axis=-1, token_grid=tokens, prefix_tokens=1)
    cams = gf.cam(model, layer, x, **options)  # (K, B, 1, h, w)
    if post == "raw":
        return cams
    k, b = cams.shape[:2]
    cams = gf.normalize(cams.flatten(0, 1))
    if post == "pgc":
        cams = gf.normalize(gf.interpolate(cams, x.shape[-2:], mode="bilinear"))
    return cams.reshape(k, b, *cams.shape[-2:])


def pgc_maps(model, module, x, classes, tokens):
    with PgcGradCAM(model, [module], reshape_transform=to_grid if tokens else None) as cam:
        maps = [cam(x, [ClassifierOutputTarget(c)] * len(x)) for c in classes]
    return torch.from_numpy(np.stack(maps))


def torchcam_maps(model, layer, x, classes):
    extractor = TorchcamGradCAM(model, layer)
    try:
        scores = model(x)
        maps = [
            extractor(c, scores, retain_graph=i < len(classes) - 1)[0]
            for i, c in enumerate(classes)
        ]
    finally:
        extractor.remove_hooks()
    return torch.stack(maps)


def captum_maps(model, module, x, classes):
    explainer = LayerGradCam(model, module)
    return torch.stack([explainer.attribute(x, c).detach().relu() for c in classes])


def cell(med, key):
    return f"{med[key]:.2f}" if key in med else "—"


def ratio(med, theirs, mine):
    return f"{med[theirs] / med[mine]:.1f}×" if theirs in med else "—"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import pytorch_grad_cam
    import torchcam

    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, pytorch-grad-cam "
        f"{getattr(pytorch_grad_cam, '__version__', '1.5.7')}, torchcam "
        f"{torchcam.__version__}, {torch.get_num_threads()} threads, {args.device}; "
        f"batch {args.batch}, 224x224, medians of {args.repeats}"
    )
    print(
        "\n| model | K | gradcam_func as pgc s | pytorch-grad-cam s | pgc / ours | "
        "gradcam_func as torchcam s | torchcam s | torchcam / ours | gradcam_func raw s | "
        "Captum loop s | Captum / ours | largest map difference (pgc, torchcam, Captum) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model, layer, module, tokens = build(name, args.device)
        x = torch.randn(args.batch, 3, 224, 224, device=args.device)
        for k in args.ks:
            classes = list(range(k))
            table = {
                "ours_pgc": partial(ours, model, layer, x, classes, tokens, "pgc"),
                "pgc": partial(pgc_maps, model, module, x, classes, tokens),
            }
            if tokens is None:
                table.update(
                    ours_tc=partial(ours, model, layer, x, classes, tokens, "torchcam"),
                    torchcam=partial(torchcam_maps, model, layer, x, classes),
                    ours_raw=partial(ours, model, layer, x, classes, tokens, "raw"),
                    captum=partial(captum_maps, model, module, x, classes),
                )
            results = {key: fn() for key, fn in table.items()}
            gaps = []
            for a, b in (("ours_pgc", "pgc"), ("ours_tc", "torchcam"), ("ours_raw", "captum")):
                if b in results:
                    mine = results[a].squeeze(2) if results[a].ndim == 5 else results[a]
                    theirs = results[b].squeeze(2) if results[b].ndim == 5 else results[b]
                    assert theirs.abs().max() > 1e-3, f"{b}'s maps are ~0"
                    gaps.append(f"{(mine.cpu() - theirs.cpu()).abs().max().item():.1e}")
                else:
                    gaps.append("—")
            del results
            times = {key: [] for key in table}
            for _ in range(args.repeats):
                for key, fn in table.items():
                    times[key].append(once_seconds(fn, warmups=0))  # interleaved single calls
            med = {key: sorted(ts)[len(ts) // 2] for key, ts in times.items()}
            cells = [cell(med, "ours_pgc"), cell(med, "pgc"), ratio(med, "pgc", "ours_pgc")]
            cells += [cell(med, "ours_tc"), cell(med, "torchcam")]
            cells += [ratio(med, "torchcam", "ours_tc"), cell(med, "ours_raw")]
            cells += [cell(med, "captum"), ratio(med, "captum", "ours_raw"), ", ".join(gaps)]
            print(f"| {name} | {k} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
