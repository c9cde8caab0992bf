"""Run in a clean virtual environment holding only the built wheel (and torch): the core
works, and every optional part names the extra it needs."""

import importlib

import torch

import gradcam_func as gf

model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 4, 3),
    torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1),
    torch.nn.Flatten(),
    torch.nn.Linear(4, 2),
)
cam = gf.grad_cam(model, "0", torch.randn(2, 3, 8, 8), target=1)
assert cam.shape == (2, 1, 6, 6), cam.shape
print("grad_cam from the wheel:", tuple(cam.shape))


def refused(action, extra):
    try:
        action()
    except ImportError as error:
        assert extra in str(error), f"{error!r} does not name {extra}"
        print(f"refused with {extra}: {error}")
    else:
        raise AssertionError(f"expected an ImportError naming {extra}")


refused(lambda: importlib.import_module("gradcam_func.jax"), "gradcam_func[jax]")
refused(lambda: importlib.import_module("gradcam_func.testing.strategies"), "gradcam_func[test]")
refused(
    lambda: gf.viz.save_grid(torch.rand(2, 3, 8, 8), cam[None], "/tmp/grid.png"),
    "gradcam_func[viz]",
)
refused(lambda: gf.metrics.rank_correlation(cam, cam), "gradcam_func[metrics]")
