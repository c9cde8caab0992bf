"""Forward mode against reverse mode, "auto" and torchcam's one-forward, K-backward loop.

    python benchmarks/forward_mode.py [--models resnet18 resnet50] [--layers layer3 layer4]
                                      [--ks 10 100 1000] [--methods gradcam xgradcam hirescam]
                                      [--repeats 1] [--modes forward reverse]
                                      [--min-sample-seconds 1] [--device cpu]
                                      [--estimate-above 100]
                                      [--memory] [--memory-chunks auto 10]
                                      [--memory-methods gradcam] [--memory-reverse-ks 100]
                                      [--memory-repeats 3] [--memory-only]
                                      [--memory-held-only]

Batch 8, 224 x 224, random weights, the K first classes. Every mode computes the same
maps (checked on the timed runs' results; the shape probe runs before any timing).
Times are medians of ``--repeats`` interleaved samples, each repeat starting one mode
later than the last; a sample is the mean of as many calls as fill
``--min-sample-seconds`` (one call of anything slower; no warm-up calls).
``--modes reverse`` leaves forced forward mode out (for rows where it is known to be
far slower); "auto / best mode" then compares with reverse mode.
Where K exceeds ``--estimate-above`` for a model larger than ResNet-18, reverse mode
and the loop (both linear in K) are estimated from their time at the largest K below
it, marked "est."; forward mode and "auto" are always run.

Peak memory (``--memory``, each of ``--memory-methods``): the RSS one call adds, each
measured in a fresh process, for reverse mode at each of ``--memory-reverse-ks`` (the
first is the baseline of the ratios), forward mode in chunks of each ``--memory-chunks``
and "auto", at K = 1000. The call is made once before the one measured (the same
shapes), so the figure is what the call holds, not what the process sets up once for
kernels it runs for the first time; the last column measures that first call instead.
With glibc's mmap threshold fixed at 128 KiB freed tensors go back to the system at
once, so the figure is what the call holds at its peak (median of ``--memory-repeats``
processes, with their smallest and largest); without it, what a long-running process may
see (malloc keeps freed blocks). ``--memory-held-only`` measures the threshold-fixed
median alone, a third fewer calls. "s (one call)" is the first repeat's call.
"""

import argparse
import statistics
import sys

import torch

import gradcam_func as gf
from _timing import peak_memory_and_seconds, report_peak, sample_seconds, synchronize
from resnet import resnet18, resnet50

MODELS = {"resnet18": resnet18, "resnet50": resnet50}
GIB = 2**30
MMAP_THRESHOLD = 2**17  # 128 KiB: freed tensors go back to the system at once


def setup(model_name, device):
    torch.manual_seed(0)
    return MODELS[model_name]().eval().to(device), torch.randn(8, 3, 224, 224, device=device)


def mode(model, layer, x, k, method, autodiff, chunk_size="auto"):
    return lambda: gf.cam(
        model,
        layer,
        x,
        targets="all" if k == 1000 else list(range(k)),
        method=method,
        autodiff=autodiff,
        chunk_size=chunk_size,
    )


def loop(model, layer, x, k, method):
    """torchcam's efficient way: one forward, then one backward per class."""
    compute = gf.methods.METHODS[method].compute

    def run():
        captured = []
        handle = model.get_submodule(layer).register_forward_hook(
            lambda m, i, out: captured.append(out)
        )
        try:
            output = model(x)
        finally:
            handle.remove()
        acts = captured[0]
        maps = []
        for c in range(k):
            (grads,) = torch.autograd.grad(output[:, c].sum(), acts, retain_graph=c < k - 1)
            maps.append(compute(acts.detach(), grads))
        return torch.stack(maps)

    return run


def chunk_of(text):
    return text if text == "auto" else int(text)


def measure_peak(model_name, layer, k, method, autodiff, chunk_size, device, first):
    model, x = setup(model_name, device)
    call = mode(model, layer, x, int(k), method, autodiff, chunk_of(chunk_size))
    if first == "first":
        gf.grad_cam(model, layer, x, 0)  # the shape probe, not measured
    else:
        call()
    report_peak(call, device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--layers", nargs="+", default=["layer3", "layer4"])
    parser.add_argument("--ks", nargs="+", type=int, default=[10, 100, 1000])
    parser.add_argument("--methods", nargs="+", default=["gradcam", "xgradcam", "hirescam"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["forward", "reverse"],
        choices=["forward", "reverse"],
        help="the forced modes timed beside auto and the loop (reverse always runs)",
    )
    parser.add_argument(
        "--min-sample-seconds",
        type=float,
        default=1.0,
        help="each sample is the mean of as many calls as fill this (a slower call once)",
    )
    parser.add_argument("--estimate-above", type=int, default=100)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="the memory table alone")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--memory-chunks", nargs="+", default=["auto", "10"], help="forward mode's chunk_size"
    )
    parser.add_argument("--memory-methods", nargs="+", default=["gradcam"])
    parser.add_argument("--memory-reverse-ks", nargs="+", type=int, default=[100])
    parser.add_argument("--memory-repeats", type=int, default=3)
    parser.add_argument(
        "--memory-held-only",
        action="store_true",
        help="only the median with the mmap threshold fixed (no 'peak GiB', no first call)",
    )
    parser.add_argument("--peak-of", nargs=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_of:
        return measure_peak(*args.peak_of)
    print(
        f"torch {torch.__version__}, device {args.device}, "
        f"{torch.get_num_threads()} threads, batch 8, 224 x 224"
    )
    if not args.memory_only:
        times_table(args)
    if args.memory or args.memory_only:
        memory_table(args)


def times_table(args):
    print(
        "\n| model | layer | method | K | forward s | reverse s | auto s (nearer mode) | loop s | "
        "loop / auto | auto / best mode |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model_name in args.models:
        model, x = setup(model_name, args.device)
        for layer in args.layers:
            gf.grad_cam(model, layer, x, 0)  # the shape probe, run before any timing
            for method in args.methods:
                per_target = {}
                for k in args.ks:
                    estimate = model_name != "resnet18" and k > args.estimate_above
                    fns = {"auto": mode(model, layer, x, k, method, "auto")}
                    if "forward" in args.modes:
                        fns["forward"] = mode(model, layer, x, k, method, "forward")
                    if not estimate:
                        fns["reverse"] = mode(model, layer, x, k, method, "reverse")
                        fns["loop"] = loop(model, layer, x, k, method)
                    times = {name: [] for name in fns}
                    results = {}
                    names = list(fns)
                    for repeat in range(args.repeats):
                        # each repeat starts one mode later: no mode always follows another
                        shift = repeat % len(names)
                        for name in names[shift:] + names[:shift]:
                            times[name].append(
                                sample_seconds(
                                    lambda name=name, fn=fns[name], results=results: (
                                        results.__setitem__(name, fn()),
                                        synchronize(args.device),
                                    ),
                                    min_seconds=args.min_sample_seconds,
                                )
                            )
                    # every mode's maps equal "auto"'s (the last run's results)
                    for name in names[1:]:
                        torch.testing.assert_close(
                            results[name], results["auto"], rtol=1e-3, atol=1e-5
                        )
                    median = {name: statistics.median(v) for name, v in times.items()}
                    note = {}
                    for name in ("reverse", "loop"):
                        if estimate:
                            below = max(kk for kk in per_target if kk <= args.estimate_above)
                            median[name] = per_target[below][name] / below * k
                            note[name] = " est."
                        else:
                            note[name] = ""
                    per_target[k] = median
                    # the mode "auto" took, read off its time: the nearer of the two run
                    ran = [m for m in ("forward", "reverse") if m in median]
                    picks = min(ran, key=lambda m: abs(median["auto"] - median[m]))
                    best = min(median[m] for m in ran)
                    forward = f"{median['forward']:.2f}" if "forward" in median else "-"
                    print(
                        f"| {model_name} | {layer} | {method} | {k} | "
                        f"{forward} | {median['reverse']:.2f}{note['reverse']} "
                        f"| {median['auto']:.2f} ({picks}) | {median['loop']:.2f}"
                        f"{note['loop']} | {median['loop'] / median['auto']:.2f} | "
                        f"{median['auto'] / best:.2f} |",
                        flush=True,
                    )


def memory_table(args):
    print(
        "\n| model | layer | method | K | mode | chunk_size | s (one call) | peak GiB | "
        f"peak GiB, mmap threshold fixed (median of {args.memory_repeats}) | "
        "min-max of those | that / reverse at the first K | "
        "first call in the process, threshold fixed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [(k, "reverse", "auto") for k in args.memory_reverse_ks]
    rows += [(1000, "forward", chunk) for chunk in args.memory_chunks]
    rows += [(1000, "auto", "auto")]
    for model_name in args.models:
        for layer in args.layers:
            for method in args.memory_methods:
                baseline = None
                for k, autodiff, chunk in rows:
                    row = (model_name, layer, k, method, autodiff, chunk, args.device)

                    def peak(first, threshold, row=row):
                        return peak_memory_and_seconds(
                            __file__, *row, first, mmap_threshold=threshold
                        )

                    measured = [peak("repeat", MMAP_THRESHOLD) for _ in range(args.memory_repeats)]
                    repeats = [peak_bytes for peak_bytes, _ in measured]
                    held = statistics.median(repeats)
                    seconds = measured[0][1]
                    default = cold = "-"
                    if not args.memory_held_only:
                        default = f"{peak('repeat', None)[0] / GIB:.2f}"
                        cold = f"{peak('first', MMAP_THRESHOLD)[0] / GIB:.3f}"
                    baseline = baseline or held
                    print(
                        f"| {model_name} | {layer} | {method} | {k} | {autodiff} | {chunk} "
                        f"| {seconds:.2f} | {default} | {held / GIB:.3f} | "
                        f"{min(repeats) / GIB:.3f}-{max(repeats) / GIB:.3f} | "
                        f"{held / baseline:.2f} | {cold} |",
                        flush=True,
                    )


if __name__ == "__main__":
    sys.exit(main())
