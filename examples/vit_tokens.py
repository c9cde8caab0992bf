"""Grad-CAM on a transformer's token layer: train a tiny ViT on the demo shapes and
draw its CAMs on the patch grid.

    python examples/vit_tokens.py [--out docs/images/vit_tokens.png]

The first block's output is (B, 1 + 64, D): a class token and an 8x8 grid of 5x5
patches. (The last block's patch tokens are never read by the head, which takes the
class token, so their gradient is zero: explain a block that a later block attends
over.)
``cam(..., channel_axis=-1, token_grid=(8, 8), prefix_tokens=1)`` pools gradients over
the grid per embedding dimension and gives a (B, 1, 8, 8) map. Captum's layout would
take the 65 tokens as channels and average over D instead.
"""

import argparse

import torch
from torch import nn

import gradcam_func as gf
from gradcam_func._shapes import CLASSES, make_shapes


class TinyViT(nn.Module):
    def __init__(self, dim=48, patch=5, grid=8, classes=len(CLASSES)):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 1 + grid * grid, dim))
        self.blocks = nn.Sequential(
            *[
                nn.TransformerEncoderLayer(
                    dim, 4, 2 * dim, dropout=0.0, batch_first=True, norm_first=True
                )
                for _ in range(2)
            ]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1) + self.pos
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="vit_tokens.png")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    images, labels, _ = make_shapes(3000, seed=0)
    test_images, test_labels, boxes = make_shapes(300, seed=10_000)
    model = TinyViT()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for epoch in range(args.epochs):
        for batch in torch.randperm(len(images)).split(64):
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_images).argmax(1) == test_labels).float().mean().item()
    options = dict(channel_axis=-1, token_grid=(8, 8), prefix_tokens=1, relu=True)
    cams = gf.cam(model, "blocks.0", test_images, test_labels.tolist(), **options)
    masks = gf.metrics.box_masks(boxes, (40, 40))
    pointing = gf.metrics.pointing_game(cams, masks).float().mean().item()
    print(f"test accuracy {accuracy:.3f}, pointing game on the token grid {pointing:.3f}")
    shown = test_images[:4]
    top, classes = gf.cam(model, "blocks.0", shown, targets=gf.top_k(2), **options)
    with torch.no_grad():
        scores = model(shown).softmax(1)
    titles = [
        [f"{CLASSES[c]} {scores[i, c]:.2f}" for c in classes[:, i].tolist()]
        for i in range(len(shown))
    ]
    gf.viz.save_grid(
        shown, top, args.out, titles, image_titles=[f"true: {CLASSES[c]}" for c in test_labels[:4]]
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
