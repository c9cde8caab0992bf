"""grad_cam eager against torch.compile on the same inputs.

    python benchmarks/compile.py

A ResNet-18 at width 16 (so compilation stays short on a CPU), 112x112 inputs,
layer4, batch 1 and 8, K = 1 and 10. Compilation happens before timing and is
reported separately. Prints a markdown table of medians and ratios.
"""

import functools
import time

import torch

import gradcam_func as gf
from _timing import median_seconds
from resnet import resnet18


def main():
    torch.manual_seed(0)
    model = resnet18(num_classes=100, width=16).eval()
    print("| B | K | eager s | compiled s | eager / compiled | first compiled call s |")
    print("|---|---|---|---|---|---|")
    for batch in (1, 8):
        x = torch.randn(batch, 3, 112, 112)
        for k in (1, 10):
            explain = lambda x, k=k: gf.grad_cam(model, "layer4", x, targets=list(range(k)))
            compiled = torch.compile(explain)
            start = time.perf_counter()
            torch.testing.assert_close(compiled(x), explain(x), rtol=1e-4, atol=1e-6)
            first = time.perf_counter() - start
            eager_s = median_seconds(functools.partial(explain, x))
            compiled_s = median_seconds(functools.partial(compiled, x))
            print(
                f"| {batch} | {k} | {eager_s:.4f} | {compiled_s:.4f} | "
                f"{eager_s / compiled_s:.2f}× | {first:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
