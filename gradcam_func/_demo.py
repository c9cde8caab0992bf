"""``gradcam-func demo``: train a tiny CNN on synthetic shapes, explain it, score it.

Trains on CPU in seconds, explains held-out images for their top-3 classes in one
vectorized ``grad_cam`` call, writes a PNG grid, and evaluates the true class's
Grad-CAM against two maps that know nothing of the model (uniform noise, and a blob
at the image centre): pointing game, deletion and insertion AUC, and the cascading
parameter-randomization check, whose similarity must fall as layers are randomized.
"""

import os
import time

import torch
from torch import nn

from . import metrics
from ._grad_cam import grad_cam
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

    def features(self, x):
        """(B, 3, S, S) -> (B, 64, S / 4, S / 4), the maps ``conv3`` leads to."""
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return torch.relu(self.bn3(self.conv3(x)))

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


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
            batch = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update()
    bar.close()
    return model.eval()


def baselines(count, size, seed):
    """Maps that know nothing of the model: uniform noise, and a centred Gaussian blob.

    Returns {name: (count, 1, size, size)}.
    """
    generator = torch.Generator().manual_seed(seed)
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    blob = torch.exp(-(axis[:, None] ** 2 + axis[None] ** 2) / (2 * (size / 6) ** 2))
    return {
        "random": torch.rand(count, 1, size, size, generator=generator),
        "centre blob": blob.expand(count, 1, size, size),
    }


def evaluate(model, images, labels, boxes, *, steps=20, seed=0):
    """Grad-CAM of the true class against the baselines, and its randomization check.

    Deletion and insertion remove 4 x 4 patches: removed one pixel at a time, the
    scattered holes of a random map wreck these small images as fast as removing the
    object does, and the curve would measure the holes, not the map.

    Returns ({name: {"pointing": ..., "deletion": ..., "insertion": ...}}, names of the
    randomized stages, mean Spearman correlation with the original CAM per stage).
    """
    size = images.shape[-1]
    target = labels.tolist()
    maps = {
        "Grad-CAM": grad_cam(model, LAYER, images, target, relu=True),
        **baselines(len(images), size, seed),
    }
    masks = metrics.box_masks(boxes, (size, size))
    scores = {}
    for name, cams in maps.items():
        _, deletion = metrics.deletion(
            model, images, cams, target, steps=steps, baseline="zero", patch_size=4, batch_size=256
        )
        _, insertion = metrics.insertion(
            model, images, cams, target, steps=steps, baseline="blur", patch_size=4, batch_size=256
        )
        scores[name] = {
            "pointing": metrics.pointing_game(cams, masks).float().mean().item(),
            "deletion": deletion.mean().item(),
            "insertion": insertion.mean().item(),
        }
    check = metrics.parameter_randomization(model, LAYER, images, target, explainer=_relu_grad_cam)
    return scores, check.names, check.spearman.mean((1, 2)).tolist()


def _relu_grad_cam(*args, **kwargs):
    return grad_cam(*args, relu=True, **kwargs)


def run_demo(
    out, *, seed=0, train_size=1500, test_size=300, epochs=6, rows=6, evaluated=100, progress=True
):
    """Train, explain, evaluate, write ``out/gradcam_demo.png``.

    Returns (accuracy, evaluation (see ``evaluate``), path).
    """
    images, labels, _ = make_shapes(train_size, seed=seed)
    test_images, test_labels, test_boxes = make_shapes(test_size, seed=seed + 10_000)
    model = train(images, labels, epochs=epochs, seed=seed, progress=progress)
    with torch.no_grad():
        scores = model(test_images).softmax(1)
    accuracy = (scores.argmax(1) == test_labels).float().mean().item()
    evaluation = evaluate(
        model, test_images[:evaluated], test_labels[:evaluated], test_boxes[:evaluated], seed=seed
    )

    shown = test_images[:rows]
    cams, classes = grad_cam(model, LAYER, shown, targets=top_k(3), relu=True)
    titles = [
        [f"{CLASSES[c]} {scores[i, c]:.2f}" for c in classes[:, i].tolist()] for i in range(rows)
    ]
    from .viz import save_grid

    os.makedirs(out, exist_ok=True)
    path = save_grid(
        shown,
        cams,
        os.path.join(out, "gradcam_demo.png"),
        titles,
        image_titles=[f"true: {CLASSES[c]}" for c in test_labels[:rows]],
    )
    return accuracy, evaluation, path


def add_arguments(parser):
    parser.add_argument("--out", default="gradcam_demo", help="folder for the PNG")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and training")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs")
    parser.add_argument("--train-size", type=int, default=1500, help="training images")


def run(args):
    start = time.perf_counter()
    accuracy, (scores, names, similarity), path = run_demo(
        args.out, seed=args.seed, epochs=args.epochs, train_size=args.train_size
    )
    print(f"test accuracy: {accuracy:.3f}")
    print(
        f"pointing-game accuracy (true class, CAM peak inside the box): "
        f"{scores['Grad-CAM']['pointing']:.3f}"
    )
    print(
        "\nthe true class's map on 100 held-out images (deletion: lower is better; "
        "insertion: higher is better)"
    )
    print(f"{'map':<12} {'pointing':>9} {'deletion AUC':>13} {'insertion AUC':>14}")
    for name, row in scores.items():
        print(
            f"{name:<12} {row['pointing']:>9.3f} {row['deletion']:>13.3f} {row['insertion']:>14.3f}"
        )
    print(
        "\ncascading randomization (Spearman correlation with the original Grad-CAM, "
        "layers randomized from the output down):"
    )
    print(
        "  "
        + "  ".join(f"{name}: {value:.2f}" for name, value in zip(names, similarity, strict=True))
    )
    print(f"\nwrote {path} ({time.perf_counter() - start:.1f} s in all)")
    return 0
