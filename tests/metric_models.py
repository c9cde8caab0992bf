"""Small models and data for the metric tests, and the metrics' definitions written
as plain loops (one perturbed image and one forward at a time), apart from the code."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def classifier(seed=0, classes=4, dtype=torch.float64):
    """A small CNN on (B, 3, 8, 8) images."""
    torch.manual_seed(seed)
    return (
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=1),
            nn.Tanh(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(24, classes),
        )
        .to(dtype)
        .eval()
    )


def images(n=3, size=8, seed=1, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=generator, dtype=dtype)


def upsampled(cam, size):
    """One CAM (h, w) at (H, W), bilinear, half-pixel centres (align_corners=False)."""
    return F.interpolate(cam[None, None].double(), size=size, mode="bilinear", align_corners=False)[
        0, 0
    ]


def ranking(cam, size):
    """Pixel indices (row-major) from the highest CAM value down; ties by index."""
    flat = upsampled(cam, size).flatten().tolist()
    return sorted(range(len(flat)), key=lambda p: (-flat[p], p))


def probability(model, image, cls):
    with torch.no_grad():
        return model(image[None]).softmax(1)[0, cls].item()


def curve_by_loop(model, image, cam, cls, steps, baseline, reveal):
    """Petsiuk et al.'s deletion (or insertion) curve of one image, one step at a time."""
    height, width = image.shape[1:]
    order = ranking(cam, (height, width))
    scores = []
    for i in range(steps + 1):
        count = i * height * width // steps
        start, source = (baseline, image) if reveal else (image, baseline)
        perturbed = start.clone()
        for position in order[:count]:
            y, x = divmod(position, width)
            perturbed[:, y, x] = source[:, y, x]
        scores.append(probability(model, perturbed, cls))
    return scores, float(np.trapezoid(scores, dx=1.0 / steps))
