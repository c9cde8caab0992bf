"""CAMs beyond flat images: a signal, a volume and a video clip, each from a small model
trained for a few seconds on synthetic data with a known answer.

    python examples/beyond.py [--seed S] [--out docs/images]

- signal (B, 1, 128): class 1 has a Gaussian bump somewhere in the noise, class 0 none;
- volume (B, 1, 16, 16, 16): class 1 has a bright blob somewhere, class 0 none;
- clip (B, 3, 8, 16, 16): a square moving right (class 1) or left (class 0).

Prints each model's test accuracy and how often the CAM's peak (upsampled) lies on the
object, and writes beyond_signal.png, beyond_volume.png and beyond_video.png.
"""

import argparse
import os

import torch
from torch import nn

import gradcam_func as gf


def signals(n, generator):
    labels = torch.randint(0, 2, (n,), generator=generator)
    x = 0.3 * torch.randn(n, 1, 128, generator=generator)
    centres = torch.randint(16, 112, (n,), generator=generator)
    t = torch.arange(128.0)
    bumps = torch.exp(-((t[None] - centres[:, None]) ** 2) / (2 * 4.0**2))
    x[:, 0] += 1.5 * bumps * labels[:, None]
    return x, labels, (bumps > 0.5)[:, None]


def volumes(n, generator):
    labels = torch.randint(0, 2, (n,), generator=generator)
    x = 0.3 * torch.randn(n, 1, 16, 16, 16, generator=generator)
    centres = torch.randint(4, 12, (n, 3), generator=generator).float()
    axis = torch.arange(16.0)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)  # (16, 16, 16, 3)
    blobs = torch.exp(-((grid[None] - centres[:, None, None, None]) ** 2).sum(-1) / 8.0)
    x[:, 0] += 1.5 * blobs * labels[:, None, None, None]
    return x, labels, (blobs > 0.5)[:, None]


def clips(n, generator):
    labels = torch.randint(0, 2, (n,), generator=generator)
    x = 0.2 * torch.rand(n, 3, 8, 16, 16, generator=generator)
    masks = torch.zeros(n, 1, 8, 16, 16, dtype=torch.bool)
    rows = torch.randint(2, 11, (n,), generator=generator)
    for i in range(n):
        for t in range(8):
            col = 1 + t if labels[i] == 1 else 9 - t
            masks[i, 0, t, rows[i] : rows[i] + 4, col : col + 4] = True
    x = torch.where(masks.expand_as(x), torch.tensor(0.9), x)
    return x, labels, masks


def model_for(kind):
    conv = {"signal": nn.Conv1d, "volume": nn.Conv3d, "video": nn.Conv3d}[kind]
    pool = {
        "signal": nn.AdaptiveAvgPool1d,
        "volume": nn.AdaptiveAvgPool3d,
        "video": nn.AdaptiveAvgPool3d,
    }[kind]
    channels = 3 if kind == "video" else 1
    return nn.Sequential(
        conv(channels, 8, 3, padding=1),
        nn.ReLU(),
        conv(8, 16, 3, padding=1),
        nn.ReLU(),
        pool(1),
        nn.Flatten(),
        nn.Linear(16, 2),
    )


def train(model, x, y, steps=150):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("docs", "images"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    results = {}
    for kind, make in [("signal", signals), ("volume", volumes), ("video", clips)]:
        torch.manual_seed(args.seed)
        generator = torch.Generator().manual_seed(args.seed)
        x, y, _ = make(600, generator)
        test_x, test_y, test_masks = make(200, generator)
        model = train(model_for(kind), x, y)
        with torch.no_grad():
            accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
        positive = test_y == 1
        cams = gf.grad_cam(model, "2", test_x[positive], 1, relu=True)
        hits = gf.metrics.pointing_game(cams, test_masks[positive][:, 0]).float().mean()
        results[kind] = (accuracy, hits.item())
        print(f"{kind:<7} test accuracy {accuracy:.3f}, CAM peak on the object {hits:.3f}")
        first = test_x[positive][0]
        path = os.path.join(args.out, f"beyond_{kind}.png")
        if kind == "signal":
            gf.viz.save_signal(first, cams[0], path, title="class 1: a bump in the noise")
        elif kind == "volume":
            gf.viz.save_volume(first, cams[0], path, axis=0, slices=8)
        else:
            gf.viz.save_video(first, cams[0], path)
    return results


if __name__ == "__main__":
    main()
