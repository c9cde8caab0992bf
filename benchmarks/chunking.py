"""The default chunk_size against every fixed choice, torchcam's loop and raw autograd.

    python benchmarks/chunking.py [--models resnet18 resnet50] [--layers layer3 layer4]
                                  [--ks 10 100] [--repeats 3] [--device cpu]

Batch 8, 224 x 224, random weights. For each model, layer and K: gradcam_func with
chunk_size None (all K at once), 32, 10, 4 and the default; torchcam's efficient way
written in plain torch (one forward, then one backward per class through the kept
graph); and one batched ``torch.autograd.grad`` (``is_grads_batched``, the baseline).
Times are medians of ``--repeats`` interleaved runs (every method once per round, so
drifts in the machine's speed hit all alike); peak memory is the RSS (or CUDA memory)
one call adds, in a fresh process. Prints markdown tables.
"""

import argparse
import statistics
import sys

import torch

import gradcam_func as gf
from _timing import once_seconds, peak_memory_bytes, report_peak, synchronize
from resnet import resnet18, resnet50

MODELS = {"resnet18": resnet18, "resnet50": resnet50}
CHUNKS = {"none": None, "32": 32, "10": 10, "4": 4}
GIB = 2**30


def setup(model_name, batch, device):
    torch.manual_seed(0)
    return MODELS[model_name]().eval().to(device), torch.randn(batch, 3, 224, 224, device=device)


def ours(model, layer, x, k, chunk="default"):
    targets = list(range(k))
    if chunk == "default":
        return lambda: gf.grad_cam(model, layer, x, targets=targets)
    return lambda: gf.grad_cam(model, layer, x, targets=targets, chunk_size=CHUNKS[chunk])


def _forward_with_acts(model, layer, x):
    captured = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda m, i, out: captured.append(out)
    )
    try:
        output = model(x)
    finally:
        handle.remove()
    return output, captured[0]


def torchcam_loop(model, layer, x, k):
    """One forward, then one backward per class through the retained graph."""

    def run():
        output, acts = _forward_with_acts(model, layer, x)
        cams = []
        for c in range(k):
            (grads,) = torch.autograd.grad(output[:, c].sum(), acts, retain_graph=c < k - 1)
            cams.append((grads.mean((2, 3), keepdim=True) * acts.detach()).sum(1, keepdim=True))
        return torch.stack(cams)

    return run


def raw_autograd(model, layer, x, k):
    """One forward, one batched autograd.grad over the K cotangents."""

    def run():
        output, acts = _forward_with_acts(model, layer, x)
        cotangents = torch.zeros(k, *output.shape, device=x.device)
        cotangents[torch.arange(k), :, torch.arange(k)] = 1
        (grads,) = torch.autograd.grad(output, acts, cotangents, is_grads_batched=True)
        return (grads.mean((3, 4), keepdim=True) * acts.detach()).sum(2, keepdim=True)

    return run


def methods(model, layer, x, k):
    table = {f"chunk {name}": ours(model, layer, x, k, name) for name in CHUNKS}
    table["default"] = ours(model, layer, x, k)
    table["torchcam loop"] = torchcam_loop(model, layer, x, k)
    table["raw autograd"] = raw_autograd(model, layer, x, k)
    return table


def timed(fn, device):
    def run():
        fn()
        synchronize(device)

    return once_seconds(run)


def measure_peak(model_name, layer, k, method, device):
    model, x = setup(model_name, 8, device)
    gf.grad_cam(model, layer, x, 0)  # the shape probe, outside the measurement
    report_peak(methods(model, layer, x, int(k))[method], device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--layers", nargs="+", default=["layer3", "layer4"])
    parser.add_argument("--ks", nargs="+", type=int, default=[10, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-time", action="store_true", help="the memory table only")
    parser.add_argument("--peak-of", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_of:
        return measure_peak(*args.peak_of)
    print(
        f"torch {torch.__version__}, device {args.device}, "
        f"{torch.get_num_threads()} threads, batch 8, 224 x 224\n"
    )
    names = [f"chunk {n}" for n in CHUNKS] + ["default", "torchcam loop", "raw autograd"]
    print(
        "| model | layer | K | default chunk | "
        + " | ".join(f"{n} s" for n in names)
        + " | default / best fixed | loop / default |"
    )
    print("|---" * (len(names) + 6) + "|")
    rows = []
    for model_name in args.models:
        model, x = setup(model_name, 8, args.device)
        for layer in args.layers:
            for k in args.ks:
                if args.no_time:
                    rows.append((model_name, layer, k))
                    continue
                table = methods(model, layer, x, k)
                reference = table["raw autograd"]().detach()
                torch.testing.assert_close(table["default"](), reference, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(
                    table["torchcam loop"](), reference, rtol=1e-4, atol=1e-5
                )
                times = {name: [] for name in names}
                for _ in range(args.repeats):
                    for name in names:
                        times[name].append(timed(table[name], args.device))
                median = {name: statistics.median(v) for name, v in times.items()}
                best = min(median[f"chunk {n}"] for n in CHUNKS)
                chosen = gf._grad_cam.default_chunk_size(k, x.shape[0], _act_numel(model, layer, x))
                print(
                    f"| {model_name} | {layer} | {k} | {chosen} | "
                    + " | ".join(f"{median[n]:.2f}" for n in names)
                    + f" | {median['default'] / best:.2f} | "
                    f"{median['torchcam loop'] / median['default']:.2f} |",
                    flush=True,
                )
                rows.append((model_name, layer, k))
    if args.no_memory:
        return
    print("\n| model | layer | K | default peak GiB | raw autograd peak GiB | ratio |")
    print("|---|---|---|---|---|---|")
    for model_name, layer, k in rows:
        mine, raw = (
            peak_memory_bytes(__file__, model_name, layer, k, method, args.device) / GIB
            for method in ("default", "raw autograd")
        )
        print(
            f"| {model_name} | {layer} | {k} | {mine:.2f} | {raw:.2f} | {mine / raw:.2f} |",
            flush=True,
        )


def _act_numel(model, layer, x):
    _, acts = _forward_with_acts(model, layer, x[:1])
    return acts.numel()


if __name__ == "__main__":
    sys.exit(main())
