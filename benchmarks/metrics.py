"""Metrics batched against the same computation one example and one target at a time.

    python benchmarks/metrics.py [--size 224] [--steps 50] [--k 10] [--batch 8] [--device cpu]

Deletion AUC of a ResNet-18 (plain torch, torchvision's layout, random weights) at
``layer4``: gradcam_func's ``metrics.deletion`` (all B x K x (S + 1) copies in batched
forwards of ``--chunk`` copies) against the loop other libraries run (per target, per
example, per step: one image, one forward). Then cascading parameter randomization
(every parameterized module, output first, one draw): ``params=`` under vmap against a
loop that deep-copies the model per stage and randomizes the copy. Both sides of each
row compute the same numbers, checked before timing. Prints a markdown table.
"""

import argparse
import copy

import torch

import gradcam_func as gf
from _timing import once_seconds
from resnet import resnet18


def deletion_loop(model, x, cams, classes, steps):
    """One (target, example, step) at a time: the way per-image metric code runs."""
    size = x.shape[-2:]
    units = size[0] * size[1]
    curves = torch.empty(len(classes), len(x), steps + 1, device=x.device)
    with torch.no_grad():
        for k, cls in enumerate(classes):
            for b in range(len(x)):
                up = gf.interpolate(cams[k, b][None], size, "bilinear")[0, 0]
                order = up.flatten().argsort(descending=True, stable=True)
                for i in range(steps + 1):
                    image = x[b].clone().flatten(1)
                    image[:, order[: i * units // steps]] = 0
                    curves[k, b, i] = model(image.reshape(1, *x.shape[1:])).softmax(1)[0, cls]
    return curves


def randomization_loop(model, layer, x, cls, names):
    """Cascading randomization by copying the model for every stage."""
    cams, randomized = [], []
    generator = torch.Generator(device=x.device).manual_seed(0)
    for name in names:
        randomized += [n for n, _ in model.named_parameters() if n.startswith(name + ".")]
        twin = copy.deepcopy(model)
        with torch.no_grad():
            for n in randomized:
                p = twin.get_parameter(n)
                noise = torch.randn(p.shape, generator=generator, device=p.device)
                p.copy_(noise * p.pow(2).mean().sqrt())
        cams.append(gf.grad_cam(twin, layer, x, cls))
    return torch.stack(cams)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = resnet18().eval().to(args.device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    classes = list(range(args.k))
    cams = gf.grad_cam(model, "layer4", x, targets=classes)

    ours = lambda: gf.metrics.deletion(
        model, x, cams, targets=classes, steps=args.steps, baseline="zero", batch_size=args.chunk
    )
    loop = lambda: deletion_loop(model, x, cams, classes, args.steps)
    torch.testing.assert_close(ours()[0], loop(), rtol=1e-4, atol=1e-5)
    rows = [
        (
            "deletion",
            f"B={args.batch}, K={args.k}, S={args.steps}, {args.size}px",
            once_seconds(ours),
            once_seconds(loop),
        )
    ]

    check = gf.metrics.parameter_randomization(model, "layer4", x, 3)
    names = check.names
    ours = lambda: gf.metrics.parameter_randomization(model, "layer4", x, 3)
    loop = lambda: randomization_loop(model, "layer4", x, 3, names)
    rows.append(
        (
            "cascading randomization",
            f"B={args.batch}, {len(names)} stages, 1 draw",
            once_seconds(ours),
            once_seconds(loop),
        )
    )

    print(f"ResNet-18 `layer4`, {torch.get_num_threads()} threads, {args.device}")
    print("| metric | setting | gradcam_func (s) | one at a time (s) | ratio |")
    print("|---|---|---|---|---|")
    for metric, setting, mine, theirs in rows:
        print(f"| {metric} | {setting} | {mine:.1f} | {theirs:.1f} | {theirs / mine:.1f}x |")


if __name__ == "__main__":
    main()
