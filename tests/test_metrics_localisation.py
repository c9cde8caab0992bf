"""Confidence change, pointing game and energy pointing game, against their papers'
definitions written out, and on cases with a known answer."""

import math

import numpy as np
import pytest
import torch

import gradcam_func as gf
from conftest import assert_close
from gradcam_func import metrics
from metric_models import classifier, images, probability, upsampled


def test_confidence_change_equals_the_definition():
    model, x = classifier(), images()
    targets = [0, 2]
    cams = gf.grad_cam(model, "2", x, targets=targets, relu=True)
    drop, increase = metrics.confidence_change(model, x, cams, targets=targets, batch_size=2)
    for k, cls in enumerate(targets):
        for b in range(3):
            up = upsampled(cams[k, b, 0], (8, 8))
            mask = (up - up.min()) / (up.max() - up.min())
            y, o = probability(model, x[b], cls), probability(model, x[b] * mask, cls)
            assert abs(drop[k, b].item() - max(0.0, y - o) / y) < 1e-12
            assert bool(increase[k, b]) == (o > y)


def test_a_map_of_ones_keeps_the_confidence():
    model, x = classifier(), images()
    drop, increase = metrics.confidence_change(model, x, torch.ones(3, 1, 2, 2), 1)
    # a constant map scales to 0 everywhere (normalize's rule): the image goes black
    black = [probability(model, torch.zeros_like(x[b]), 1) for b in range(3)]
    clean = [probability(model, x[b], 1) for b in range(3)]
    assert_close(
        drop,
        torch.tensor(
            [max(0, c - z) / c for c, z in zip(clean, black, strict=True)], dtype=torch.float64
        ),
    )


def masks_of(boxes, size=(8, 8)):
    return metrics.box_masks(torch.tensor(boxes), size)


def test_box_masks_are_half_open():
    masks = masks_of([[1, 2, 3, 5]])
    expected = torch.zeros(1, 8, 8, dtype=torch.bool)
    expected[0, 2:5, 1:3] = True
    assert torch.equal(masks, expected)
    assert masks_of([[[0, 0, 1, 1], [6, 6, 8, 8]]]).sum() == 5  # two boxes, united


def test_pointing_game_hits_where_the_peak_is():
    cams = torch.zeros(2, 1, 8, 8)
    cams[0, 0, 3, 4] = 1.0  # inside the box below
    cams[1, 0, 7, 7] = 1.0  # far outside
    masks = masks_of([[2, 2, 6, 6], [0, 0, 2, 2]])
    assert metrics.pointing_game(cams, masks).tolist() == [True, False]


def test_tolerance_is_a_strict_euclidean_distance():
    mask = masks_of([[0, 0, 2, 2]], size=(20, 20))  # pixels (0..1, 0..1)
    cam = torch.zeros(1, 1, 20, 20)
    cam[0, 0, 4, 5] = 1.0  # nearest mask pixel (1, 1): distance 5 exactly
    assert metrics.pointing_game(cam, mask, tolerance=5).tolist() == [False]
    assert metrics.pointing_game(cam, mask, tolerance=5.01).tolist() == [True]
    assert metrics.pointing_game(cam, mask).tolist() == [False]


def test_pointing_game_against_a_loop_on_stacked_low_resolution_cams():
    model, x = classifier(), images(n=4, size=16)
    cams = gf.grad_cam(model, "2", x, targets=[0, 1, 2])  # (3, 4, 1, 16, 16)
    cams = torch.nn.functional.avg_pool2d(cams.flatten(0, 1), 4).unflatten(0, (3, 4))
    masks = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(0)) < 0.3
    hits = metrics.pointing_game(cams, masks, tolerance=3)
    for k in range(3):
        for b in range(4):
            up = upsampled(cams[k, b, 0], (16, 16))
            y, x0 = divmod(int(up.flatten().argmax()), 16)
            near = min(math.dist((y, x0), (i, j)) for i, j in masks[b].nonzero().tolist())
            assert bool(hits[k, b]) == (near < 3)


def test_energy_pointing_game():
    cam = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    cam[0, 0, :2, :2] = 3.0  # inside
    cam[0, 0, 3, 3] = 1.0  # outside
    cam[0, 0, 2, 2] = -5.0  # negative mass does not count
    cam[1] = -1.0  # no positive mass at all
    masks = masks_of([[0, 0, 2, 2], [0, 0, 2, 2]], size=(4, 4))
    assert_close(
        metrics.energy_pointing_game(cam, masks),
        torch.tensor([12.0 / 13.0, 0.0], dtype=torch.float64),
    )


def test_numpy_cams_without_a_channel_axis():
    cams = np.zeros((2, 8, 8), dtype=np.float32)
    cams[0, 1, 1] = cams[1, 6, 6] = 1
    masks = masks_of([[0, 0, 3, 3], [0, 0, 3, 3]])
    assert metrics.pointing_game(cams, masks).tolist() == [True, False]


@pytest.mark.parametrize(
    "boxes, fragment",
    [
        ([[0, 0, 9, 4]], r"every box must lie inside the 8 x 8 image"),
        ([[3, 0, 3, 4]], r"with x0 < x1 and y0 < y1"),
        ([[1, 2, 3]], r"expected boxes \(B, 4\) or \(B, n, 4\)"),
    ],
)
def test_bad_boxes(boxes, fragment):
    with pytest.raises(gf.GradCamError, match=fragment):
        masks_of(boxes)


def test_bad_tolerance_and_cams():
    masks = masks_of([[0, 0, 2, 2]])
    with pytest.raises(gf.GradCamError, match=r"tolerance=-1\): expected a number >= 0"):
        metrics.pointing_game(torch.zeros(1, 1, 4, 4), masks, tolerance=-1)
    with pytest.raises(
        gf.GradCamError,
        match=r"pointing_game\(\.\.\., cams=\.\.\.\): "
        r"expected CAMs of shape \(K, B, 1, \*s\).*got \(3, 2, 4, 4, 4\)",
    ):
        metrics.pointing_game(torch.zeros(3, 2, 4, 4, 4), masks)
