"""A synthetic localization data set: one shape per image on a cluttered background.

Each image is (3, S, S) in [0, 1] with one object of a known class at a random place
and its bounding box (x0, y0, x1, y1), half-open, in pixels. The clutter (noise,
blurred blobs and thin strokes) shares the objects' colours, so only shape tells the
classes apart and a model has to look at the object.
"""

import math

import torch

CLASSES = ("square", "disk", "triangle", "cross", "ring")


def _mask(name, size, radius, cx, cy):
    """(size, size) bool mask of one shape centred at (cx, cy)."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    dx, dy = xs - cx, ys - cy
    if name == "square":
        return (dx.abs() <= radius) & (dy.abs() <= radius)
    if name == "disk":
        return dx**2 + dy**2 <= radius**2
    if name == "triangle":  # apex up, base at the bottom
        return (dy <= radius) & (dy >= -radius) & (dx.abs() <= (dy + radius) / 2)
    if name == "cross":
        arm = radius / 3
        return ((dx.abs() <= arm) & (dy.abs() <= radius)) | (
            (dy.abs() <= arm) & (dx.abs() <= radius)
        )
    if name == "ring":
        r2 = dx**2 + dy**2
        return (r2 <= radius**2) & (r2 >= (radius * 0.55) ** 2)
    raise ValueError(name)


def _clutter(generator, size):
    """(3, size, size) background: noise, soft blobs and thin strokes."""
    image = 0.15 * torch.rand(3, size, size, generator=generator)
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    for _ in range(3):
        cx, cy = (torch.rand(2, generator=generator) * size).tolist()
        sigma = 1.5 + 2.5 * torch.rand(1, generator=generator).item()
        colour = torch.rand(3, 1, 1, generator=generator) * 0.6
        blob = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        image = image + colour * blob
    for _ in range(2):
        x0, y0, angle = (torch.rand(3, generator=generator) * size).tolist()
        length = size / 4
        t = torch.linspace(0, 1, 3 * size)
        px = (x0 + t * length * math.cos(angle)).long().clamp(0, size - 1)
        py = (y0 + t * length * math.sin(angle)).long().clamp(0, size - 1)
        image[:, py, px] = torch.rand(3, 1, generator=generator) * 0.8 + 0.2
    return image


def make_shapes(n, size=40, seed=0):
    """n images (n, 3, size, size), labels (n,), boxes (n, 4) as (x0, y0, x1, y1)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.empty(n, 3, size, size)
    labels = torch.randint(len(CLASSES), (n,), generator=generator)
    boxes = torch.empty(n, 4, dtype=torch.long)
    for i in range(n):
        radius = 4 + 3 * torch.rand(1, generator=generator).item()
        margin = radius + 1
        cx, cy = (margin + torch.rand(2, generator=generator) * (size - 2 * margin)).tolist()
        mask = _mask(CLASSES[labels[i]], size, radius, cx, cy)
        colour = torch.rand(3, 1, 1, generator=generator) * 0.6 + 0.4
        image = _clutter(generator, size)
        images[i] = torch.where(mask, colour, image).clamp(0, 1)
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        boxes[i] = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    return images, labels, boxes
