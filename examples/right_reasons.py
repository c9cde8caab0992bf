"""Right for the right reasons: train with a penalty on CAM mass outside the object.

A synthetic task where a spurious cue (a bright corner patch) predicts the label
perfectly in training but not at test time. One model is trained on cross-entropy
alone, one adds a penalty on the fraction of its Grad-CAM that falls outside the
object's mask. The CAM is differentiated through with ``torch.func.grad``: the penalty
is second order, through the layer's VJP.

    python examples/right_reasons.py [--steps N] [--seed S]
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import gradcam_func as gf

SIZE = 16


def make_data(n, generator, spurious):
    """Images (n, 1, S, S), labels (n,), object masks (n, S, S).

    Class 1 is a filled square, class 0 the same square with a dark 3x3 centre, at a
    random place away from the top-left corner, on noise. With ``spurious`` the corner
    patch is lit exactly for class 1; without, it is lit at random.
    """
    images = 0.3 * torch.rand(n, 1, SIZE, SIZE, generator=generator)
    labels = torch.randint(2, (n,), generator=generator)
    masks = torch.zeros(n, SIZE, SIZE)
    corner = labels.bool() if spurious else torch.rand(n, generator=generator) < 0.5
    for i in range(n):
        y, x = torch.randint(5, SIZE - 5, (2,), generator=generator).tolist()
        masks[i, y - 2 : y + 3, x - 2 : x + 3] = 1
        images[i, 0, y - 2 : y + 3, x - 2 : x + 3] = 0.8
        if labels[i] == 0:
            images[i, 0, y - 1 : y + 2, x - 1 : x + 2] = 0.1
        if corner[i]:
            images[i, 0, :3, :3] = 1.0
    return images, labels, masks


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def outside_fraction(cams, masks):
    """Share of each CAM's absolute mass outside its mask: cams (B, 1, S, S) -> (B,)."""
    mass = cams[:, 0].abs()
    return (mass * (1 - masks)).sum((1, 2)) / (mass.sum((1, 2)) + 1e-6)


def loss_terms(model, params, images, labels, masks):
    """Cross-entropy and CAM-outside-the-mask fraction from ONE forward (layer_vjp)."""
    output, acts, pullback = gf.layer_vjp(model, "conv2", images, params=params)
    cams = gf.ops.grad_cam_from(acts, pullback(F.one_hot(labels, 2).to(output.dtype)))
    return F.cross_entropy(output, labels), outside_fraction(cams, masks).mean()


def train(penalty, steps, seed, data, log=print):
    torch.manual_seed(seed)
    model = Net()
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=1e-2)
    images, labels, masks = data

    def objective(p, x, y, m):
        ce, outside = loss_terms(model, p, x, y, m)
        return ce + penalty * outside, (ce, outside)

    history = []
    for step in range(steps):
        batch = torch.randint(len(images), (64,))
        grads, (ce, outside) = torch.func.grad(objective, has_aux=True)(
            {k: v.detach() for k, v in params.items()}, images[batch], labels[batch], masks[batch]
        )
        for name, value in params.items():
            value.grad = grads[name]
        optimizer.step()
        history.append((ce.item(), outside.item()))
        if step % max(steps // 5, 1) == 0 or step == steps - 1:
            log(
                f"  step {step:4d}  cross-entropy {ce.item():.3f}  "
                f"CAM mass outside the object {outside.item():.3f}"
            )
    return model.eval(), history


def evaluate(model, data):
    """Accuracy and mean CAM fraction inside the object on ``data``."""
    images, labels, masks = data
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    cams = gf.grad_cam(model, "conv2", images, labels)
    return accuracy, 1 - outside_fraction(cams, masks).mean().item()


def main(argv=None, log=print):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--penalty", type=float, default=5.0)
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(args.seed)
    train_data = make_data(2000, generator, spurious=True)
    test_data = make_data(1000, generator, spurious=False)
    results = {}
    for name, penalty in [("cross-entropy only", 0.0), ("with CAM penalty", args.penalty)]:
        log(f"{name}:")
        model, history = train(penalty, args.steps, args.seed, train_data, log)
        accuracy, inside = evaluate(model, test_data)
        results[name] = dict(history=history, accuracy=accuracy, inside=inside)
        log(
            f"  test accuracy (corner cue random) {accuracy:.3f}, "
            f"CAM mass inside the object {inside:.3f}\n"
        )
    return results


if __name__ == "__main__":
    main()
