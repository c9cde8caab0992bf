"""Many targets per example: gradcam_func against Captum and a raw-autograd baseline.

    python benchmarks/multi_target.py            # the full table (about 30 minutes on 2 cores)
    python benchmarks/multi_target.py --quick    # ResNet-18 layer4 only (a few minutes)
    python benchmarks/multi_target.py --ks 100 --chunks 100 25 10 4   # chunk sizes
    python benchmarks/multi_target.py --device cuda   # on a GPU (timings synchronised)

Every method gets the same model and inputs in the same run, and the results are
checked to agree before anything is timed. Times are medians of
torch.utils.benchmark's blocked_autorange; peak memory is measured per method in a
fresh subprocess (the RSS one call adds). Prints markdown tables.
"""

import argparse
import sys

import torch
from captum.attr import LayerGradCam

import gradcam_func as gf
from _timing import median_seconds, once_seconds, peak_memory_bytes, report_peak
from resnet import resnet18, resnet50

MODELS = {"resnet18": resnet18, "resnet50": resnet50}
GIB = 2**30


def setup(model_name, batch, device="cpu", seed=0):
    torch.manual_seed(seed)
    model = MODELS[model_name]().eval().to(device)
    return model, torch.randn(batch, 3, 224, 224, device=device)


def ours(model, layer, x, k, chunk_size=None):
    targets = list(range(k))
    return lambda: gf.grad_cam(model, layer, x, targets=targets, chunk_size=chunk_size)


def captum_loop(model, layer, x, k):
    explainer = LayerGradCam(model, layer)
    return lambda: torch.stack([explainer.attribute(x, t).detach() for t in range(k)])


def captum_repeated(model, layer, x, k):
    explainer = LayerGradCam(model, layer)
    repeated = x.repeat(k, *([1] * (x.ndim - 1)))
    classes = torch.arange(k).repeat_interleave(len(x))
    return lambda: (
        explainer.attribute(repeated, classes).detach().reshape(k, len(x), *x.shape[:0], 1, -1)
    )


def raw_autograd(model, layer, x, k):
    """What one writes by hand: a hook, one forward, batched autograd.grad, the formula."""

    def run():
        captured = []
        handle = layer.register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            output = model(x)
        finally:
            handle.remove()
        acts = captured[0]
        cotangents = torch.zeros(k, *output.shape, device=output.device)
        cotangents[torch.arange(k), :, torch.arange(k)] = 1
        (grads,) = torch.autograd.grad(output, acts, cotangents, is_grads_batched=True)
        weights = grads.mean((3, 4), keepdim=True)
        return (weights * acts.detach()).sum(2, keepdim=True)

    return run


METHODS = {
    "gradcam_func": ours,
    "raw_autograd": raw_autograd,
    "captum_loop": captum_loop,
    "captum_repeated": captum_repeated,
}


def method_fn(name, model, layer_name, x, k, chunk_size=None):
    layer = model.get_submodule(layer_name)
    if name == "gradcam_func":
        return ours(model, layer, x, k, chunk_size)
    return METHODS[name](model, layer, x, k)


def check_agreement(model, layer_name, x, k):
    layer = model.get_submodule(layer_name)
    reference = raw_autograd(model, layer, x, k)().detach()
    torch.testing.assert_close(ours(model, layer, x, k)(), reference, rtol=1e-4, atol=1e-6)
    first = LayerGradCam(model, layer).attribute(x, min(k, 2) - 1).detach()
    torch.testing.assert_close(first, reference[min(k, 2) - 1], rtol=1e-4, atol=1e-6)


def fmt(seconds):
    return "—" if seconds is None else f"{seconds:.3f}"


def ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}×"


def time_table(models, layers, batches, ks, loop_once_up_to, device):
    print(
        "| model | layer | B | K | gradcam_func s | raw autograd s | Captum loop s "
        "| Captum repeated s | loop / ours | raw / ours | repeated / ours |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model_name in models:
        for batch in batches:
            model, x = setup(model_name, batch, device)
            for layer in layers:
                per_target = None
                for k in ks:
                    check_agreement(model, layer, x, k)
                    t_ours = median_seconds(method_fn("gradcam_func", model, layer, x, k))
                    t_raw = median_seconds(method_fn("raw_autograd", model, layer, x, k))
                    loop = method_fn("captum_loop", model, layer, x, k)
                    if k <= 10:
                        t_loop = median_seconds(loop)
                        per_target = t_loop / k
                        loop_note = ""
                    elif (model_name, layer, batch) in loop_once_up_to:
                        t_loop, loop_note = once_seconds(loop), " (1 run)"
                    else:
                        t_loop, loop_note = per_target * k, " (est.)"
                    t_rep = (
                        median_seconds(method_fn("captum_repeated", model, layer, x, k))
                        if k * batch <= 80
                        else None
                    )
                    print(
                        f"| {model_name} | {layer} | {batch} | {k} | {fmt(t_ours)} | "
                        f"{fmt(t_raw)} | {fmt(t_loop)}{loop_note} | {fmt(t_rep)} | "
                        f"{ratio(t_loop, t_ours)} | {ratio(t_raw, t_ours)} | "
                        f"{ratio(t_rep, t_ours)} |",
                        flush=True,
                    )


def chunk_table(models, layers, batch, k, chunk_sizes, device):
    """gradcam_func alone at one K for several chunk sizes (time of one run each)."""
    print("| model | layer | B | K | chunk_size | gradcam_func s |")
    print("|---|---|---|---|---|---|")
    for model_name in models:
        model, x = setup(model_name, batch, device)
        for layer in layers:
            for chunk in chunk_sizes:
                fn = method_fn("gradcam_func", model, layer, x, k, chunk)
                fn()  # warm the shape cache
                print(
                    f"| {model_name} | {layer} | {batch} | {k} | {chunk} | "
                    f"{once_seconds(fn):.3f} |",
                    flush=True,
                )


def memory_table(configs, device):
    print("| model | layer | B | K | method | chunk_size | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for model_name, layer, batch, k, method, chunk in configs:
        peak = peak_memory_bytes(__file__, model_name, layer, batch, k, method, chunk, device)
        print(
            f"| {model_name} | {layer} | {batch} | {k} | {method} | {chunk} | {peak / GIB:.2f} |",
            flush=True,
        )


def measure_peak(model_name, layer, batch, k, method, chunk, device):
    model, x = setup(model_name, int(batch), device)
    fn = method_fn(method, model, layer, x, int(k), None if chunk == "None" else int(chunk))
    gf.grad_cam(model, layer, x, 0)  # warm the shape cache (the measured shapes) outside it
    report_peak(fn, device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18 layer4 only")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--layers", nargs="+", default=["layer4", "layer3"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 10, 100])
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-time", action="store_true")
    parser.add_argument(
        "--chunks",
        nargs="+",
        type=int,
        metavar="CHUNK_SIZE",
        help="only time gradcam_func at batch 8, K=max(--ks), per chunk size",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peak-of", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_of:
        return measure_peak(*args.peak_of)
    if args.quick:
        args.models, args.layers = ["resnet18"], ["layer4"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}\n")
    if args.chunks:
        return chunk_table(args.models, args.layers, 8, max(args.ks), args.chunks, args.device)
    if not args.no_time:
        time_table(
            args.models,
            args.layers,
            args.batches,
            args.ks,
            loop_once_up_to={("resnet18", "layer4", 8)},
            device=args.device,
        )
    if not args.no_memory:
        print()
        configs = []
        for model_name in args.models:
            for layer in args.layers:
                for k in args.ks:
                    for method in ["gradcam_func", "raw_autograd", "captum_loop"]:
                        if method == "captum_loop" and k > 10:
                            continue
                        configs.append((model_name, layer, 8, k, method, None))
                for chunk in (10, 4):
                    configs.append((model_name, layer, 8, max(args.ks), "gradcam_func", chunk))
        memory_table(configs, args.device)


if __name__ == "__main__":
    sys.exit(main())
