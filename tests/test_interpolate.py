"""interpolate and normalize: Captum's numbers, every rank, clear errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution

import gradcam_func as gf


@pytest.mark.parametrize("mode", ["nearest", "area", "bilinear", "bicubic"])
def test_two_dimensional_matches_captum(mode):
    cam = torch.randn(2, 1, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(
        gf.interpolate(cam, (20, 21), mode), LayerAttribution.interpolate(cam, (20, 21), mode)
    )


@pytest.mark.parametrize("spatial, linear", [(1, "linear"), (2, "bilinear"), (3, "trilinear")])
@pytest.mark.parametrize("mode", ["nearest", "area", "linear", "bilinear", "trilinear"])
def test_every_rank(spatial, linear, mode):
    cam = torch.randn(2, 3, *[4] * spatial, dtype=torch.float64)
    expected_mode = linear if "linear" in mode else mode
    kwargs = {"align_corners": False} if expected_mode == linear else {}
    expected = F.interpolate(cam, size=(8,) * spatial, mode=expected_mode, **kwargs)
    torch.testing.assert_close(gf.interpolate(cam, 8, mode), expected)


def test_nearest_upsampling_repeats_cells():
    cam = torch.arange(4.0).reshape(1, 1, 2, 2)
    expected = cam.repeat_interleave(3, 2).repeat_interleave(3, 3)
    torch.testing.assert_close(gf.interpolate(cam, (6, 6)), expected)


@pytest.mark.parametrize(
    "cam, size, mode, fragment",
    [
        (
            torch.zeros(1, 1, 4),
            (8,),
            "bicubic",
            r"mode='bicubic'\): bicubic needs a 2-D map, the "
            r"CAM has 1 spatial axes",
        ),
        (
            torch.zeros(1, 1, 4, 4),
            (8,),
            "nearest",
            r"size=\(8,\)\): a CAM of shape \(1, 1, 4, 4\) "
            r"has 2 spatial axes, so size needs 2",
        ),
        (torch.zeros(1, 4), (8,), "nearest", r"expected a CAM of shape \(B, C, \*S\) with 1 to 3"),
        (
            torch.zeros(1, 1, 4),
            (8,),
            "cubic",
            r"mode='cubic'\): expected one of nearest, nearest-exact, area, linear",
        ),
    ],
)
def test_errors(cam, size, mode, fragment):
    with pytest.raises(gf.GradCamError, match=fragment):
        gf.interpolate(cam, size, mode)


def test_normalize_maps_each_map_to_the_unit_interval():
    cams = torch.randn(3, 2, 4, 5, dtype=torch.float64) * 7 + 2
    cams[1, 0] = 3.0  # a constant map
    out = gf.normalize(cams)
    flat = out.flatten(2)
    torch.testing.assert_close(flat[[0, 2]].amin(-1), torch.zeros(2, 2, dtype=torch.float64))
    torch.testing.assert_close(flat[[0, 2]].amax(-1), torch.ones(2, 2, dtype=torch.float64))
    assert torch.equal(out[1, 0], torch.zeros(4, 5, dtype=torch.float64))
    np.testing.assert_allclose(gf.normalize(cams.numpy()), out.numpy())
    # min-max is affine per map: rescaling a map does not change it
    torch.testing.assert_close(gf.normalize(cams * 3 + 1), out)
