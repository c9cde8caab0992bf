"""Overlays and grids: shapes, value ranges, torch and NumPy alike, a real PNG."""

import matplotlib.image
import numpy as np
import pytest
import torch

import gradcam_func as gf
from gradcam_func import viz


@pytest.mark.parametrize("layout", ["chw", "hwc", "gray"])
def test_overlay_shape_and_range(layout):
    image = torch.rand(3, 32, 24)
    image = {"chw": image, "hwc": image.permute(1, 2, 0), "gray": image[0]}[layout]
    out = viz.overlay(torch.randn(1, 8, 6), image)
    assert out.shape == (32, 24, 3) and out.min() >= 0 and out.max() <= 1


def test_overlay_takes_numpy_and_torch_alike():
    image, cam = np.random.rand(16, 16, 3), np.random.randn(4, 4)
    np.testing.assert_allclose(
        viz.overlay(cam, image), viz.overlay(torch.from_numpy(cam), torch.from_numpy(image))
    )


def test_overlay_alpha_zero_is_the_image_and_one_is_the_heatmap():
    image = np.random.rand(8, 8, 3)
    cam = np.random.rand(8, 8)
    np.testing.assert_allclose(viz.overlay(cam, image, alpha=0.0), image)
    from matplotlib import colormaps

    expected = colormaps["jet"](gf.normalize(cam))[..., :3]
    np.testing.assert_allclose(viz.overlay(cam, image, alpha=1.0), expected)


def test_overlay_hot_spot_lands_where_the_cam_peaks():
    cam = np.zeros((4, 4))
    cam[0, 3] = 1.0
    out = viz.overlay(cam, np.zeros((40, 40, 3)), cmap="gray", alpha=1.0)
    peak = np.unravel_index(out[..., 0].argmax(), (40, 40))
    assert peak[0] < 10 and peak[1] >= 30


def test_overlay_rejects_a_stack_of_maps():
    with pytest.raises(
        gf.GradCamError,
        match=r"overlay\(cam=\.\.\.\): expected one 2-D map "
        r"of shape \(h, w\).*got \(3, 4, 4\)",
    ):
        viz.overlay(torch.zeros(3, 4, 4), torch.zeros(3, 8, 8))


def test_save_grid_writes_a_png(tmp_path):
    images = torch.rand(2, 3, 16, 16)
    cams = torch.randn(3, 2, 1, 4, 4)
    titles = [[f"class {k}" for k in range(3)] for _ in range(2)]
    path = viz.save_grid(images, cams, tmp_path / "grid.png", titles, image_titles=["a", "b"])
    picture = matplotlib.image.imread(path)
    assert picture.shape[0] > 200 and picture.shape[1] > picture.shape[0]


def test_save_grid_checks_the_layout(tmp_path):
    with pytest.raises(gf.GradCamError, match=r"cams \(K, N, \.\.\.\) must have N = 2 images"):
        viz.save_grid(torch.rand(2, 3, 8, 8), torch.rand(2, 5, 1, 4, 4), tmp_path / "x.png")
