"""grad_cam eager, torch.compile around grad_cam, and compile_grad_cam, on the same inputs.

    python benchmarks/compile.py [--width 64] [--size 224] [--batch 8] [--ks 10 100]
                                 [--repeats 3] [--device cpu]

ResNet-18 (plain torch, random weights, eval mode) at ``layer4``. First the graph-break
count of each compiled way (``torch._dynamo.explain``) for a plain CNN and the ResNet;
then, per K, the first call of each compiled way (tracing and compilation, reported
apart) and medians of ``--repeats`` interleaved timings of the three. Every result is
checked equal to eager ``grad_cam`` before timing.
"""

import argparse
import time
from functools import partial

import torch
from torch import nn

import gradcam_func as gf
from _timing import median_seconds, synchronize
from resnet import resnet18


class PlainCNN(nn.Module):
    """Three 3x3 convolutions with ReLU, global pooling and a linear head."""

    def __init__(self, classes=100):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(self.convs(x).mean((2, 3)))


def breaks(model, layer, x, k):
    """(graphs, breaks) for torch.compile around grad_cam and for compile_grad_cam."""
    targets = list(range(k))
    around = torch._dynamo.explain(lambda x: gf.grad_cam(model, layer, x, targets=targets))(x)
    counted = []

    def backend(graph, example_inputs):
        counted.append(graph)
        return graph.forward

    gf.compile_grad_cam(model, layer, backend=backend, fullgraph=True)(x, targets=targets)
    torch._dynamo.reset()
    return (around.graph_count, around.graph_break_count), (len(counted), 0)


def timed(fn, device):
    def run():
        fn()
        synchronize(device)

    return median_seconds(run)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}")

    print(
        "\n| model | torch.compile(grad_cam): graphs, breaks | compile_grad_cam: graphs, breaks |"
    )
    print("|---|---|---|")
    for name, model, layer, size in (
        ("plain CNN", PlainCNN(), "convs.4", 64),
        (f"resnet18 (width {args.width})", resnet18(width=args.width), "layer4", args.size),
    ):
        x = torch.randn(2, 3, size, size)
        around, ours = breaks(model.eval(), layer, x, 10)
        print(f"| {name} | {around[0]}, {around[1]} | {ours[0]}, {ours[1]} |", flush=True)

    model = resnet18(width=args.width).eval().to(args.device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    print(
        f"\nResNet-18 width {args.width}, layer4, batch {args.batch}, {args.size}x{args.size}: "
        f"medians of {args.repeats} interleaved runs, seconds"
    )
    print(
        "| K | eager grad_cam s | torch.compile(grad_cam) s | compile_grad_cam s | "
        "eager / compile_grad_cam | first call s (around, ours) |"
    )
    print("|---|---|---|---|---|---|")
    for k in args.ks:
        targets = list(range(k))
        eager = partial(gf.grad_cam, model, "layer4", x, targets=targets)
        around_fn = torch.compile(partial(gf.grad_cam, model, "layer4", targets=targets))
        ours_fn = gf.compile_grad_cam(model, "layer4")
        expected = eager()
        firsts = []
        around, ours = partial(around_fn, x), partial(ours_fn, x, targets=targets)
        for fn in (around, ours):
            start = time.perf_counter()
            result = fn()
            synchronize(args.device)
            firsts.append(time.perf_counter() - start)
            torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5)
        table = {
            "eager": eager,
            "around": around,
            "ours": ours,
        }
        times = {name: [] for name in table}
        for _ in range(args.repeats):
            for name, fn in table.items():
                times[name].append(timed(fn, args.device))
        med = {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}
        print(
            f"| {k} | {med['eager']:.3f} | {med['around']:.3f} | {med['ours']:.3f} | "
            f"{med['eager'] / med['ours']:.2f}× | {firsts[0]:.1f}, {firsts[1]:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
