"""Parameter randomization: the randomized CAMs equal Captum's on a copy of the model
loaded with the same random weights, the similarities equal SciPy's, and the model is
left untouched."""

import copy

import pytest
import torch
from captum.attr import LayerGradCam
from scipy.stats import spearmanr

import gradcam_func as gf
from conftest import assert_close, assert_matches, assert_unchanged, hooks_of, snapshot
from gradcam_func import metrics
from metric_models import classifier, images


def random_weights(model, names, generator, draws=1):
    """The documented rule: N(0, rms^2) per tensor, drawn in the given order."""
    weights = dict(model.named_parameters())
    out = {}
    for name in names:
        w = weights[name].detach()
        out[name] = (
            torch.randn((draws, *w.shape), generator=generator, dtype=w.dtype)
            * w.pow(2).mean().sqrt()
        )
    return out


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_cams_equal_captum_on_randomized_copies(mode):
    model, x = classifier(), images()
    result = metrics.parameter_randomization(
        model, "2", x, 1, mode=mode, draws=2, generator=torch.Generator().manual_seed(7)
    )
    assert result.names == ["6", "2", "0"]  # the Linear, then the convs, output first
    generator = torch.Generator().manual_seed(7)
    randomized = []
    for stage, name in enumerate(result.names):
        params = [f"{name}.weight", f"{name}.bias"]
        randomized = randomized + params if mode == "cascading" else params
        drawn = random_weights(model, randomized, generator, draws=2)
        for d in range(2):
            twin = copy.deepcopy(model)
            with torch.no_grad():
                for key, value in drawn.items():
                    twin.get_parameter(key).copy_(value[d])
            expected = LayerGradCam(twin, twin[2]).attribute(x, 1).detach()
            assert_matches(result.cams[stage, d], expected)


def test_similarities_equal_scipys_spearman():
    model, x = classifier(), images()
    original = gf.grad_cam(model, "2", x, 2)
    result = metrics.parameter_randomization(model, "2", x, 2)
    for stage in range(3):
        for b in range(3):
            cam = result.cams[stage, 0, b].flatten().numpy()
            ref = original[b].flatten().numpy()
            assert abs(result.spearman[stage, 0, b] - spearmanr(cam, ref).statistic) < 1e-6
            assert (
                abs(result.spearman_abs[stage, 0, b] - spearmanr(abs(cam), abs(ref)).statistic)
                < 1e-6
            )


class WithSpare(torch.nn.Module):
    """The classifier beside a module whose output is thrown away."""

    def __init__(self):
        super().__init__()
        self.net, self.spare = classifier(), torch.nn.Linear(4, 4).double()

    def forward(self, x):
        out = self.net(x)
        self.spare(out)
        return out


def test_a_module_that_does_not_matter_leaves_the_cam_as_it_was():
    model, x = WithSpare(), images()
    result = metrics.parameter_randomization(model, "net.2", x, 0, modules=["spare"])
    assert_close(result.spearman, torch.ones_like(result.spearman))
    assert_close(result.ssim, torch.ones_like(result.ssim))


def test_the_cam_forgets_the_model_as_layers_are_randomized():
    model, x = classifier(), images(n=6)
    result = metrics.parameter_randomization(model, "2", x, 1, draws=3)
    assert result.spearman[-1].mean() < 0.5


def test_nothing_is_changed_or_left_behind():
    """Train-mode BatchNorm does not vmap: the draws run one at a time, still pure."""
    model, x = classifier(), images()
    model.add_module("bn", torch.nn.BatchNorm1d(4).double())  # after the Linear
    model.train()
    saved, hooks = snapshot(model, (x,)), hooks_of(model)
    metrics.parameter_randomization(model, "2", x, 1, draws=2)
    assert_unchanged(model, (x,), saved)
    assert hooks_of(model) == hooks


def test_bad_arguments():
    model, x = classifier(), images()
    with pytest.raises(
        gf.GradCamError,
        match=r"mode='all'\): expected 'cascading' or "
        r"'independent'",
    ):
        metrics.parameter_randomization(model, "2", x, 1, mode="all")
    with pytest.raises(gf.GradCamError, match=r"draws=0\): expected a positive int"):
        metrics.parameter_randomization(model, "2", x, 1, draws=0)
    with pytest.raises(
        gf.GradCamError,
        match=r"modules=\[\.\.\., 'head', \.\.\.\]\): not a "
        r"submodule",
    ):
        metrics.parameter_randomization(model, "2", x, 1, modules=["head"])
