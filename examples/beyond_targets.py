"""Every target builder on one trained model: a small multi-task CNN on the demo's shapes
that classifies, detects (one DETR-style query), segments and embeds each image.

    python examples/beyond_targets.py [--seed S] [--out docs/images]

Trains for a few seconds, then explains 200 held-out images at ``conv3`` for each
example's own class with each target kind (segmentation, detection, regression of the
box's width, similarity to the class's mean embedding, Finer-CAM's contrast), prints
how often each CAM's peak lies in the object's box next to a centred blob that knows
nothing of the model, and writes beyond_targets.png (the first four images).
"""

import argparse
import os

import torch
from torch import nn

import gradcam_func as gf
from gradcam_func import targets as gt
from gradcam_func._demo import ShapesNet, baselines
from gradcam_func._shapes import CLASSES, make_shapes
from gradcam_func.targets import _cxcywh_to_xyxy

SIZE = 40


class MultiTask(ShapesNet):
    """The demo's CNN with more heads: (B, 3, 40, 40) -> a dict: ``logits`` (B, 1,
    classes + 1) and ``pred_boxes`` (B, 1, 4) as DETR returns them for one query,
    ``segmentation`` (B, classes + 1, 40, 40) with class 0 the background, and
    ``embedding`` (B, 64)."""

    def __init__(self, classes=len(CLASSES)):
        super().__init__(classes + 1)  # fc: the classifier, with a "no object" class
        self.box = nn.Sequential(nn.Conv2d(64, 8, 1), nn.Flatten(), nn.Linear(8 * 100, 4))
        self.segment = nn.Conv2d(64, classes + 1, 1)

    def forward(self, x):
        features = self.features(x)
        embedding = features.mean((2, 3))
        segmentation = nn.functional.interpolate(
            self.segment(features), size=(SIZE, SIZE), mode="bilinear", align_corners=False
        )
        return {
            "logits": self.fc(embedding)[:, None],
            "pred_boxes": self.box(features).sigmoid()[:, None],
            "segmentation": segmentation,
            "embedding": embedding,
        }


def cxcywh(boxes):
    """(N, 4) pixel boxes (x0, y0, x1, y1) -> normalised (cx, cy, w, h)."""
    x0, y0, x1, y1 = (boxes.float() / SIZE).unbind(1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], 1)


def pixel_classes(labels, boxes):
    """(N, 40, 40) long: the class + 1 inside each box, 0 outside."""
    masks = gf.metrics.box_masks(boxes, (SIZE, SIZE))
    return masks.long() * (labels[:, None, None] + 1)


def train(images, labels, boxes, *, epochs=15, seed=0, batch_size=64):
    torch.manual_seed(seed)
    model = MultiTask()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    where, regions = cxcywh(boxes), pixel_classes(labels, boxes)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), batch_size):
            batch = order[start : start + batch_size]
            out = model(images[batch])
            loss = (
                nn.functional.cross_entropy(out["logits"][:, 0], labels[batch])
                + 5 * nn.functional.l1_loss(out["pred_boxes"][:, 0], where[batch])
                + nn.functional.cross_entropy(out["segmentation"], regions[batch])
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def targets_for(cls, boxes, references):
    """Each target kind for images of class ``cls`` with boxes (n, 4) in pixels."""
    corners = boxes.float() / SIZE  # normalised (x0, y0, x1, y1), as DETR's boxes
    return {
        "segmentation": gt.segmentation(cls + 1, logits=lambda out: out["segmentation"]),
        "detection": gt.detection(corners, cls, box_terms=True),
        "regression (box width)": gt.regression((0, 2), values=lambda out: out["pred_boxes"]),
        "similarity": gt.similarity(references[cls], embedding=lambda out: out["embedding"]),
        "finer": gt.finer(cls, similar=2, logits=lambda out: out["logits"][:, 0, :-1]),
    }


def explain(model, images, labels, boxes, references):
    """{target kind: (N, 1, 40, 40)}: each example's CAM for its own class, upsampled."""
    maps = {}
    for cls in labels.unique().tolist():
        chosen = (labels == cls).nonzero()[:, 0]
        kinds = targets_for(cls, boxes[chosen], references)
        cams = gf.grad_cam(
            model, "conv3", images[chosen], targets=list(kinds.values()), relu=True
        )  # (kinds, n, 1, 10, 10)
        for kind, cam in zip(kinds, cams, strict=True):
            upsampled = gf.interpolate(cam, (SIZE, SIZE), mode="bilinear")
            maps.setdefault(kind, torch.empty(len(images), 1, SIZE, SIZE))[chosen] = upsampled
    return maps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("docs", "images"))
    args = parser.parse_args(argv)
    images, labels, boxes = make_shapes(1500, seed=args.seed)
    test_images, test_labels, test_boxes = make_shapes(200, seed=args.seed + 10_000)
    model = train(images, labels, boxes, seed=args.seed)
    with torch.no_grad():
        embeddings = model(images)["embedding"]
        test_out = model(test_images)
    references = torch.stack([embeddings[labels == c].mean(0) for c in range(len(CLASSES))])
    accuracy = (test_out["logits"][:, 0, :-1].argmax(1) == test_labels).float().mean().item()
    predicted = _cxcywh_to_xyxy(test_out["pred_boxes"][:, 0])
    overlap = gt.box_iou(test_boxes.float() / SIZE, predicted)
    matched = overlap.diagonal() > 0.5  # the detection target scores 0 elsewhere
    print(
        f"classification accuracy {accuracy:.3f}, mean box IoU "
        f"{overlap.diagonal().mean().item():.3f}, boxes matched (IoU > 0.5) "
        f"{matched.float().mean().item():.3f}"
    )
    maps = explain(model, test_images, test_labels, test_boxes, references)
    masks = gf.metrics.box_masks(test_boxes, (SIZE, SIZE))
    maps_and_blob = {
        **maps,
        "centre blob": baselines(len(test_images), SIZE, args.seed)["centre blob"],
    }
    results = {}
    for kind, cams in maps_and_blob.items():
        hits = gf.metrics.pointing_game(cams, masks)
        results[kind] = hits.float().mean().item()
        line = f"{kind:<24} CAM peak in the object's box {results[kind]:.3f}"
        if kind == "detection":
            results["detection, matched boxes"] = hits[matched].float().mean().item()
            line += f" (matched boxes only: {results['detection, matched boxes']:.3f})"
        print(line)
    os.makedirs(args.out, exist_ok=True)
    first = slice(0, 4)
    gf.viz.save_grid(
        test_images[first],
        torch.stack([m[first, 0] for m in maps.values()]),
        os.path.join(args.out, "beyond_targets.png"),
        [list(maps)] * 4,
        image_titles=[CLASSES[c] for c in test_labels[first].tolist()],
    )
    return {"accuracy": accuracy, "pointing": results}


if __name__ == "__main__":
    main()
