"""Pointing-game accuracy of every CAM method on the demo's held-out shapes.

    python benchmarks/variants_pointing.py [--seeds 0 1 2] [--picture variants.png]

Trains the demo's CNN once per seed, explains 300 held-out images for their true
class with each method (one call each: the gradient methods, the gradient-free ones
and Guided Grad-CAM), upsamples bilinearly and counts how often the map's peak falls
inside the object's box. Prints a markdown table with each method's seconds for the
300 images; --picture also draws the methods side by side for the first seed's first
five images.
"""

import argparse
import time

import torch

import gradcam_func as gf
from gradcam_func._demo import LAYER, train
from gradcam_func._shapes import make_shapes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--picture", help="PNG path for a methods-by-images grid")
    args = parser.parse_args()
    methods = list(gf.methods.METHODS) + ["guided gradcam"]
    scores = {m: [] for m in methods}
    seconds = {m: [] for m in methods}
    for seed in args.seeds:
        images, labels, _ = make_shapes(1500, seed=seed)
        test_images, test_labels, boxes = make_shapes(300, seed=seed + 10_000)
        model = train(images, labels, epochs=6, seed=seed, progress=False)
        classes = test_labels.tolist()
        all_maps = []
        for method in methods:
            start = time.perf_counter()
            if method == "guided gradcam":
                maps = gf.guided_grad_cam(model, LAYER, test_images, classes).abs().sum(1, True)
            else:
                cams = gf.cam(model, LAYER, test_images, classes, method=method, relu=True)
                maps = gf.interpolate(cams, test_images.shape[-2:], mode="bilinear")
            seconds[method].append(time.perf_counter() - start)
            masks = gf.metrics.box_masks(boxes, test_images.shape[-2:])
            scores[method].append(gf.metrics.pointing_game(maps, masks).float().mean().item())
            all_maps.append(maps[:5])
        if args.picture and seed == args.seeds[0]:
            gf.viz.save_grid(test_images[:5], torch.stack(all_maps), args.picture, [methods] * 5)
    print(f"| method | pointing game (mean over seeds {args.seeds}) | per seed | seconds |")
    print("|---|---|---|---|")
    for method, values in scores.items():
        print(
            f"| {method} | {sum(values) / len(values):.3f} | "
            f"{', '.join(f'{v:.3f}' for v in values)} | "
            f"{sum(seconds[method]) / len(seconds[method]):.2f} |"
        )


if __name__ == "__main__":
    main()
