"""Evaluate Grad-CAM on the demo's shapes: deletion and insertion curves against two
maps that know nothing of the model, and the cascading randomization grid.

    python examples/evaluation.py [--seed S] [--out docs/images]

Trains the demo's CNN (about 10 s), explains 100 held-out images for their true class,
prints the mean curves' AUCs and the mean similarity per randomized stage, and writes
``evaluation_curves.png`` and ``evaluation_randomization.png``.
"""

import argparse
import os

import torch

import gradcam_func as gf
from gradcam_func._demo import LAYER, baselines, train
from gradcam_func._shapes import make_shapes

STEPS = 20


def relu_grad_cam(*args, **kwargs):
    return gf.grad_cam(*args, relu=True, **kwargs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("docs", "images"))
    args = parser.parse_args(argv)

    images, labels, _ = make_shapes(1500, seed=args.seed)
    test_images, test_labels, _ = make_shapes(100, seed=args.seed + 10_000)
    model = train(images, labels, epochs=6, seed=args.seed, progress=False)
    target = test_labels.tolist()
    maps = {
        "Grad-CAM": relu_grad_cam(model, LAYER, test_images, target),
        **baselines(len(test_images), test_images.shape[-1], args.seed),
    }
    curves = {}
    for name, cams in maps.items():
        deleted, deletion_auc = gf.metrics.deletion(
            model, test_images, cams, target, steps=STEPS, patch_size=4, batch_size=256
        )
        inserted, insertion_auc = gf.metrics.insertion(
            model, test_images, cams, target, steps=STEPS, patch_size=4, batch_size=256
        )
        curves[name] = (deleted.mean(0), inserted.mean(0))
        print(
            f"{name:<12} deletion AUC {deletion_auc.mean():.3f}   "
            f"insertion AUC {insertion_auc.mean():.3f}"
        )

    check = gf.metrics.parameter_randomization(
        model, LAYER, test_images[:4], target[:4], explainer=relu_grad_cam
    )
    print("cascading randomization, mean Spearman correlation per stage:")
    print(
        "  "
        + "  ".join(
            f"{n}: {v:.2f}"
            for n, v in zip(check.names, check.spearman.mean((1, 2)).tolist(), strict=True)
        )
    )
    draw(curves, check, maps["Grad-CAM"][:4], test_images[:4], args.out)
    return curves, check


def draw(curves, check, original, images, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    share = torch.linspace(0, 1, STEPS + 1)
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for name, (deleted, inserted) in curves.items():
        axes[0].plot(share, deleted, label=name)
        axes[1].plot(share, inserted, label=name)
    for axis, title in zip(
        axes, ["deletion (lower is better)", "insertion (higher is better)"], strict=True
    ):
        axis.set(title=title, xlabel="share of 4 x 4 patches", ylim=(0, 1))
    axes[0].set_ylabel("probability of the true class")
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(os.path.join(out, "evaluation_curves.png"), dpi=100)
    plt.close(figure)

    stages = len(check.names)
    figure, axes = plt.subplots(
        len(images), stages + 2, figsize=(1.3 * (stages + 2), 1.4 * len(images))
    )
    for row in range(len(images)):
        axes[row, 0].imshow(images[row].permute(1, 2, 0).clamp(0, 1))
        axes[row, 1].imshow(gf.viz.overlay(original[row], images[row]))
        for stage in range(stages):
            axes[row, stage + 2].imshow(gf.viz.overlay(check.cams[stage, 0, row], images[row]))
    axes[0, 0].set_title("image", fontsize=8)
    axes[0, 1].set_title("Grad-CAM", fontsize=8)
    for stage, name in enumerate(check.names):
        axes[0, stage + 2].set_title(f"+ {name}", fontsize=8)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(os.path.join(out, "evaluation_randomization.png"), dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()
