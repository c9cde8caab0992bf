"""K targets on the same CNN and weights: gradcam_func's torch path, its jitted JAX path
(an Equinox model and an NNX model, by layer), and a JAX loop of one jitted
single-target call per target; all in one run, compile time reported apart.

    python benchmarks/jax_multi_target.py [--batch 8] [--size 64] [--ks 1 10 100]

Prints a Markdown table: median seconds per call (JAX results blocked until ready),
and the first call of each jitted function (tracing and compilation) on its own.
"""

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import torch
from _timing import median_seconds
from flax import nnx
from torch import nn

import gradcam_func as gf
import gradcam_func.jax as gj

WIDTHS = (3, 32, 64, 128, 128)
CLASSES = 128


class TorchNet(nn.Module):
    """Four 3x3 convolutions (stride 2 after the first), ReLU, global mean, linear."""

    def __init__(self, classes=CLASSES):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, 3, stride=1 if n == 0 else 2, padding=1)
            for n, (i, o) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:], strict=True))
        )
        self.fc = nn.Linear(WIDTHS[-1], classes)

    def forward(self, x):
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.fc(x.mean((2, 3)))


class EqxNet(eqx.Module):
    """TorchNet in Equinox, for one example (C, H, W), with TorchNet's weights."""

    convs: list
    fc: eqx.nn.Linear

    def __init__(self, w):
        key = jax.random.PRNGKey(0)
        classes = len(w["fc.bias"])
        self.convs = []
        for n, (i, o) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:], strict=True)):
            conv = eqx.nn.Conv2d(i, o, 3, stride=1 if n == 0 else 2, padding=1, key=key)
            weights = (
                jnp.asarray(w[f"convs.{n}.weight"]),
                jnp.asarray(w[f"convs.{n}.bias"])[:, None, None],
            )
            self.convs.append(eqx.tree_at(lambda c: (c.weight, c.bias), conv, weights))
        fc = eqx.nn.Linear(WIDTHS[-1], classes, key=key)
        self.fc = eqx.tree_at(
            lambda f: (f.weight, f.bias),
            fc,
            (jnp.asarray(w["fc.weight"]), jnp.asarray(w["fc.bias"])),
        )

    def __call__(self, x):
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return self.fc(x.mean((1, 2)))


class NnxNet(nnx.Module):
    """TorchNet in Flax NNX, channels-last (B, H, W, C), with TorchNet's weights."""

    def __init__(self, w):
        rngs = nnx.Rngs(0)
        self.convs = nnx.List(
            nnx.Conv(i, o, (3, 3), strides=1 if n == 0 else 2, padding=((1, 1), (1, 1)), rngs=rngs)
            for n, (i, o) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:], strict=True))
        )
        for n, conv in enumerate(self.convs):
            conv.kernel[...] = jnp.asarray(w[f"convs.{n}.weight"].transpose(2, 3, 1, 0))
            conv.bias[...] = jnp.asarray(w[f"convs.{n}.bias"])
        self.fc = nnx.Linear(WIDTHS[-1], len(w["fc.bias"]), rngs=rngs)
        self.fc.kernel[...] = jnp.asarray(w["fc.weight"].T)
        self.fc.bias[...] = jnp.asarray(w["fc.bias"])

    def __call__(self, x):
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return self.fc(x.mean((1, 2)))


def first_and_median(fn):
    """(seconds of the first call, median seconds of the later ones)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, median_seconds(fn)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100])
    args = parser.parse_args()

    torch.manual_seed(0)
    model = TorchNet().eval()
    w = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    eqx_model, nnx_model = EqxNet(w), NnxNet(w)
    x = torch.randn(args.batch, 3, args.size, args.size)
    xs = jnp.asarray(x.numpy())
    layer = "convs.2"  # (B, 128, size / 4, size / 4)

    print(
        f"CNN {WIDTHS}, {CLASSES} classes, input {args.batch}x3x{args.size}x{args.size}, "
        f"layer {layer}; torch {torch.__version__}, jax {jax.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print(
        "| K | torch s | Equinox jit s | NNX jit s | JAX loop s | torch / Equinox | "
        "loop / Equinox | compile s (Equinox, NNX, loop) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    single = jax.jit(lambda x, k: gj.grad_cam_module(eqx_model, layer, x, k))
    loop_compile, _ = first_and_median(lambda: single(xs, jnp.asarray(0)).block_until_ready())
    for k in args.ks:
        r = measure(list(range(k)), layer, model, x, eqx_model, nnx_model, single)
        print(
            f"| {k} | {r['torch']:.4f} | {r['eqx']:.4f} | {r['nnx']:.4f} | {r['loop']:.4f} | "
            f"{r['torch'] / r['eqx']:.2f}× | {r['loop'] / r['eqx']:.2f}× | "
            f"{r['eqx_first']:.1f}, {r['nnx_first']:.1f}, {loop_compile:.1f} |",
            flush=True,
        )


def measure(targets, layer, model, x, eqx_model, nnx_model, single):
    """Seconds per call of each side for these targets, after checking they agree."""
    xs = jnp.asarray(x.numpy())
    xs_last = xs.transpose(0, 2, 3, 1)
    expected = gf.grad_cam(model, layer, x, targets=targets).numpy()
    eqx_fn = jax.jit(lambda x: gj.grad_cam_module(eqx_model, layer, x, targets=targets))
    nnx_fn = jax.jit(lambda x: gj.grad_cam_module(nnx_model, layer, x, targets=targets))

    def loop():
        return [single(xs, jnp.asarray(t)).block_until_ready() for t in targets]

    result = {"torch": median_seconds(lambda: gf.grad_cam(model, layer, x, targets=targets))}
    result["eqx_first"], result["eqx"] = first_and_median(lambda: eqx_fn(xs).block_until_ready())
    result["nnx_first"], result["nnx"] = first_and_median(
        lambda: nnx_fn(xs_last).block_until_ready()
    )
    result["loop"] = median_seconds(loop)
    close = dict(rtol=1e-3, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(np.asarray(eqx_fn(xs)), expected, **close)
    np.testing.assert_allclose(
        np.asarray(nnx_fn(xs_last)), expected.transpose(0, 1, 3, 4, 2), **close
    )
    np.testing.assert_allclose(np.stack([np.asarray(c) for c in loop()]), expected, **close)
    return result


if __name__ == "__main__":
    main()
