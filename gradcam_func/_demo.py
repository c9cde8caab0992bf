"""``gradcam-func demo``: train a tiny CNN on synthetic shapes, explain it, score it.

Trains on CPU in seconds, explains held-out images for their top-3 classes in one
vectorized ``grad_cam`` call, writes a PNG grid, and prints the pointing-game
accuracy: how often the peak of the true class's CAM falls inside the object's box.
"""

import os
import time

import torch
from torch import nn

from ._grad_cam import grad_cam
from ._interpolate import interpolate
from ._shapes import CLASSES, make_shapes
from ._targets import top_k

LAYER = "conv3"


class ShapesNet(nn.Module):
    """Three conv-BatchNorm-ReLU blocks and global average pooling: (B, 3, S, S) -> (B, N)."""

    def __init__(self, classes=len(CLASSES)):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


def train(images, labels, *, epochs, seed, batch_size=64, progress=True):
    """A ShapesNet fitted to (images, labels) with Adam; returns it in eval mode."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = ShapesNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    bar = tqdm(total=steps, desc="training", unit="step", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), batch_size):
            batch = order[start:start + batch_size]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update()
    bar.close()
    return model.eval()


def pointing_game(cams, boxes):
    """Fraction of maps whose peak lies inside its box.

    cams: (B, 1, H, W) at image resolution; boxes: (B, 4) as (x0, y0, x1, y1), half-open.
    """
    flat = cams.flatten(1).argmax(1)
    ys, xs = flat // cams.shape[-1], flat % cams.shape[-1]
    inside = (xs >= boxes[:, 0]) & (xs < boxes[:, 2]) & (ys >= boxes[:, 1]) & (ys < boxes[:, 3])
    return inside.float().mean().item()


def run_demo(out, *, seed=0, train_size=1500, test_size=300, epochs=6, rows=6,
             progress=True):
    """Train, explain, write ``out/gradcam_demo.png``; returns (accuracy, pointing, path)."""
    images, labels, _ = make_shapes(train_size, seed=seed)
    test_images, test_labels, test_boxes = make_shapes(test_size, seed=seed + 10_000)
    model = train(images, labels, epochs=epochs, seed=seed, progress=progress)
    with torch.no_grad():
        scores = model(test_images).softmax(1)
    accuracy = (scores.argmax(1) == test_labels).float().mean().item()

    size = test_images.shape[-2:]
    true_class = grad_cam(model, LAYER, test_images, test_labels.tolist(), relu=True)
    pointing = pointing_game(interpolate(true_class, size, mode="bilinear"), test_boxes)

    shown = test_images[:rows]
    cams, classes = grad_cam(model, LAYER, shown, targets=top_k(3), relu=True)
    titles = [[f"{CLASSES[c]} {scores[i, c]:.2f}" for c in classes[:, i].tolist()]
              for i in range(rows)]
    from .viz import save_grid

    os.makedirs(out, exist_ok=True)
    path = save_grid(shown, cams, os.path.join(out, "gradcam_demo.png"), titles,
                     image_titles=[f"true: {CLASSES[c]}" for c in test_labels[:rows]])
    return accuracy, pointing, path


def add_arguments(parser):
    parser.add_argument("--out", default="gradcam_demo", help="folder for the PNG")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and training")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs")
    parser.add_argument("--train-size", type=int, default=1500, help="training images")


def run(args):
    start = time.perf_counter()
    accuracy, pointing, path = run_demo(args.out, seed=args.seed, epochs=args.epochs,
                                        train_size=args.train_size)
    print(f"test accuracy: {accuracy:.3f}")
    print(f"pointing-game accuracy (true class, CAM peak inside the box): {pointing:.3f}")
    print(f"wrote {path} ({time.perf_counter() - start:.1f} s in all)")
    return 0
