"""The JAX path's forward mode against its reverse mode, and "auto", on many classes.

    python benchmarks/jax_forward_mode.py [--batch 8] [--size 64] [--classes 1000]
                                          [--layers convs.1 convs.2] [--ks 10 100 1000]
                                          [--chunk-size 100]

jax_multi_target.py's CNN with ``--classes`` outputs, the same weights in Equinox (per
example, vmapped) and Flax NNX, the K first classes. "reverse" and "forward" force
``autodiff=`` inside ``jax.jit`` (the layer fixed); "auto" is the default, called
eagerly (under jit it stays in reverse mode; eagerly it goes forward when the layer's
channels are fewer than the targets, and checks the first target's map against reverse
mode). ``--chunk-size`` cotangents or directions per vmapped pass, for every entry.
Medians (torch.utils.benchmark's blocked runs) in one run; every result is checked
against the torch path's maps first. Compilation (the first call) is not timed.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch
from _timing import median_seconds
from jax_multi_target import EqxNet, NnxNet, TorchNet

import gradcam_func as gf
import gradcam_func.jax as gj


def entries(eqx_model, nnx_model, layer, options):
    """The timed calls by name: each model jitted in each mode, and Equinox's eager "auto"."""
    fns = {}
    for mode in ("reverse", "forward"):
        for name, net in (("eqx", eqx_model), ("nnx", nnx_model)):
            fns[f"{name} {mode}"] = jax.jit(
                lambda x, net=net, mode=mode: gj.grad_cam_module(
                    net, layer, x, autodiff=mode, **options
                )
            )
    fns["eqx auto"] = lambda x: gj.grad_cam_module(eqx_model, layer, x, **options)
    return fns


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--layers", nargs="+", default=["convs.1", "convs.2"])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--chunk-size", type=int, default=100)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = TorchNet(args.classes).eval()
    w = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    eqx_model, nnx_model = EqxNet(w), NnxNet(w)
    x = torch.randn(args.batch, 3, args.size, args.size)
    xs = jnp.asarray(x.numpy())
    xs_last = xs.transpose(0, 2, 3, 1)
    print(
        f"input {args.batch}x3x{args.size}x{args.size}, {args.classes} classes, chunk_size "
        f"{args.chunk_size}; torch {torch.__version__}, jax {jax.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print(
        "| layer | channels | K | Equinox reverse s | Equinox forward s | NNX reverse s | "
        "NNX forward s | Equinox auto (eager) s | reverse / forward (Equinox, NNX) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for layer in args.layers:
        for k in args.ks:
            targets = list(range(k))
            options = dict(targets=targets, chunk_size=args.chunk_size)
            expected = gf.grad_cam(model, layer, x, targets=targets).numpy()
            close = dict(rtol=1e-3, atol=1e-4 * np.abs(expected).max())
            fns = entries(eqx_model, nnx_model, layer, options)
            seconds = {}
            for name, fn in fns.items():
                inputs = xs_last if name.startswith("nnx") else xs
                result = np.asarray(fn(inputs))  # the first call compiles: not timed
                if name.startswith("nnx"):
                    result = np.moveaxis(result, -1, 2)
                np.testing.assert_allclose(result, expected, **close)
                seconds[name] = median_seconds(
                    lambda fn=fn, inputs=inputs: jax.block_until_ready(fn(inputs))
                )
            channels = w[f"{layer}.weight"].shape[0]
            print(
                f"| {layer} | {channels} | {k} | {seconds['eqx reverse']:.3f} | "
                f"{seconds['eqx forward']:.3f} | {seconds['nnx reverse']:.3f} | "
                f"{seconds['nnx forward']:.3f} | {seconds['eqx auto']:.3f} | "
                f"{seconds['eqx reverse'] / seconds['eqx forward']:.2f}, "
                f"{seconds['nnx reverse'] / seconds['nnx forward']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
