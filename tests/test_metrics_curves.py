"""deletion, insertion and ROAD against their definitions written as plain loops, and
on cases whose answer is known."""

import numpy as np
import pytest
import torch
from torch import nn

import gradcam_func as gf
from conftest import assert_close, assert_unchanged, hooks_of, snapshot
from gradcam_func import metrics
from metric_models import classifier, curve_by_loop, images, probability, ranking

STEPS = 8


@pytest.mark.parametrize("reveal", [False, True], ids=["deletion", "insertion"])
def test_curves_equal_the_loop_for_every_target_and_example(reveal):
    model, x = classifier(), images()
    targets = [0, 3, [1, 2, 0]]
    cams = gf.grad_cam(model, "2", x, targets=targets)
    baseline = torch.full_like(x, 0.25)
    measure = metrics.insertion if reveal else metrics.deletion
    curves, auc = measure(model, x, cams, targets=targets, steps=STEPS, baseline=0.25, batch_size=7)
    assert curves.shape == (3, 3, STEPS + 1) and auc.shape == (3, 3)
    for k, target in enumerate(targets):
        for b in range(3):
            cls = target[b] if isinstance(target, list) else target
            expected, area = curve_by_loop(
                model, x[b], cams[k, b, 0], cls, STEPS, baseline[b], reveal
            )
            assert_close(curves[k, b], torch.tensor(expected, dtype=torch.float64))
            assert abs(auc[k, b].item() - area) < 1e-9


def test_ends_are_the_input_and_the_baseline():
    model, x = classifier(), images()
    cams = gf.grad_cam(model, "2", x, 1)
    deleted, _ = metrics.deletion(model, x, cams, 1, steps=4, baseline="mean")
    inserted, _ = metrics.insertion(model, x, cams, 1, steps=4, baseline="mean")
    mean = x.mean((2, 3), keepdim=True).expand_as(x)
    for b in range(3):
        assert abs(deleted[b, 0].item() - probability(model, x[b], 1)) < 1e-12
        assert abs(deleted[b, -1].item() - probability(model, mean[b], 1)) < 1e-12
        assert abs(inserted[b, 0].item() - probability(model, mean[b], 1)) < 1e-12
        assert abs(inserted[b, -1].item() - probability(model, x[b], 1)) < 1e-12


class MeanBrightness(nn.Module):
    """Score = the mean of the input: every pixel counts the same."""

    def forward(self, x):
        return x.mean((1, 2, 3))[:, None]


def test_a_constant_map_on_a_linear_score_gives_the_diagonal():
    x = torch.ones(2, 1, 6, 6, dtype=torch.float64)
    cams = torch.ones(2, 1, 3, 3, dtype=torch.float64)
    curves, auc = metrics.deletion(
        MeanBrightness(), x, cams, lambda out: out[:, 0], steps=4, baseline="zero"
    )
    assert_close(curves, torch.tensor([[1.0, 0.75, 0.5, 0.25, 0.0]] * 2, dtype=torch.float64))
    assert_close(auc, torch.tensor([0.5, 0.5], dtype=torch.float64))


class ObjectScore(nn.Module):
    """Score = the brightness inside a fixed object region: only the object counts."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x):
        return (x * self.mask).sum((1, 2, 3))[:, None] / self.mask.sum()


def test_the_true_object_mask_deletes_fastest():
    mask = torch.zeros(1, 8, 8, dtype=torch.float64)
    mask[:, 2:5, 3:7] = 1
    model = ObjectScore(mask)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = x + 0.5
    score = lambda out: out[:, 0]
    true = mask.expand(4, 1, 8, 8)
    random = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, true_auc = metrics.deletion(model, x, true, score, steps=16)
    _, random_auc = metrics.deletion(model, x, random, score, steps=16)
    _, inverse_auc = metrics.deletion(model, x, 1 - true, score, steps=16)
    assert (true_auc < random_auc).all() and (random_auc < inverse_auc).all()
    # the object's 12 of 64 pixels are gone by step 3 of 16: the score is 0 from there
    curves, _ = metrics.deletion(model, x, true, score, steps=16)
    assert (curves[:, 3:] == 0).all() and (curves[:, 2] > 0).all()


def test_patches_remove_whole_patches():
    model, x = classifier(), images(n=2)
    cams = gf.grad_cam(model, "2", x, 2)
    curves, _ = metrics.deletion(model, x, cams, 2, steps=4, patch_size=4, baseline="zero")
    # by hand: 4 patches of 4 x 4 ranked by their mean upsampled CAM, one per step
    from metric_models import upsampled

    for b in range(2):
        up = upsampled(cams[b, 0], (8, 8))
        patch_means = up.reshape(2, 4, 2, 4).mean((1, 3)).flatten().tolist()
        order = sorted(range(4), key=lambda p: (-patch_means[p], p))
        for step in range(5):
            image = x[b].clone()
            for patch in order[:step]:
                row, col = divmod(patch, 2)
                image[:, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = 0
            assert abs(curves[b, step].item() - probability(model, image, 2)) < 1e-12


@pytest.mark.parametrize("baseline", ["blur", "mean", "zero", 0.5])
def test_numpy_cams_of_pytorch_grad_cam_shape(baseline):
    model, x = classifier(), images(n=2)
    cams = gf.grad_cam(model, "2", x, 1)
    as_numpy = gf.interpolate(cams, (8, 8), "bilinear")[:, 0].numpy()  # (B, H, W)
    expected = metrics.deletion(model, x, cams, 1, steps=4, baseline=baseline)
    got = metrics.deletion(model, x, as_numpy, 1, steps=4, baseline=baseline)
    assert_close(got[0], expected[0])


def test_the_blur_baseline_is_a_gaussian_blur():
    x = torch.zeros(1, 1, 61, 61, dtype=torch.float64)
    x[0, 0, 30, 30] = 1.0
    blurred = metrics._curves.baseline_of("blur", x, "deletion")[0, 0]
    axis = torch.arange(61, dtype=torch.float64)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    gaussian = torch.exp(-((ys - 30) ** 2 + (xs - 30) ** 2) / (2 * 5.0**2))
    window = (slice(15, 46), slice(15, 46))  # the kernel is cut at 3 sigma = 15 pixels
    assert_close(blurred[window] / blurred[30, 30], gaussian[window])
    assert blurred[:15].abs().max() == 0 and abs(blurred.sum().item() - 1) < 1e-12


def test_the_model_is_left_as_it_was():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).train()
    x = images(n=2, dtype=torch.float32)
    cams = torch.rand(2, 1, 8, 8)
    saved, hooks = snapshot(model, (x,)), hooks_of(model)
    metrics.deletion(model, x, cams, 1, steps=4)
    metrics.road(model, x, cams, 1, percentages=(0.5,))
    assert_unchanged(model, (x,), saved)
    assert hooks_of(model) == hooks


def imputation_by_scipy(image, removed):
    """ROAD's noisy linear imputation (noise 0) as a sparse system built pixel by pixel."""
    from scipy.sparse import lil_matrix
    from scipy.sparse.linalg import spsolve

    channels, height, width = image.shape
    weights = {
        (dy, dx): (1 / 6 if dy == 0 or dx == 0 else 1 / 12)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
    }
    holes = [(y, x) for y in range(height) for x in range(width) if removed[y, x]]
    index = {p: i for i, p in enumerate(holes)}
    matrix = lil_matrix((len(holes), len(holes)))
    rhs = np.zeros((len(holes), channels))
    for (y, x), i in index.items():
        for (dy, dx), w in weights.items():
            q = (y + dy, x + dx)
            if 0 <= q[0] < height and 0 <= q[1] < width:
                matrix[i, i] += w
                if q in index:
                    matrix[i, index[q]] -= w
                else:
                    rhs[i] += w * image[:, q[0], q[1]].numpy()
    solution = spsolve(matrix.tocsc(), rhs).reshape(len(holes), channels)
    result = image.clone()
    for (y, x), i in index.items():
        result[:, y, x] = torch.from_numpy(solution[i])
    return result


@pytest.mark.parametrize("share", [0.3, 0.9])
def test_imputation_solves_roads_linear_system(share):
    x = images(n=2, size=10)
    removed = torch.rand(2, 10, 10, generator=torch.Generator().manual_seed(2)) < share
    ours = metrics.noisy_linear_imputation(x, removed, noise=0.0)
    for b in range(2):
        assert_close(ours[b], imputation_by_scipy(x[b], removed[b]))
    noisy = metrics.noisy_linear_imputation(
        x, removed, noise=0.1, generator=torch.Generator().manual_seed(0)
    )
    spread = (noisy - ours)[removed[:, None].expand_as(x)].std().item()
    assert 0.08 < spread < 0.12 and torch.equal(
        noisy[~removed[:, None].expand_as(x)], x[~removed[:, None].expand_as(x)]
    )


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_equals_the_loop(order):
    model, x = classifier(), images(n=2)
    cams = gf.grad_cam(model, "2", x, targets=[1, 2])
    percentages = (0.25, 0.5, 0.75)
    scores = metrics.road(
        model, x, cams, targets=[1, 2], percentages=percentages, order=order, noise=0.0
    )
    assert scores.shape == (2, 2, 3)
    for k, cls in enumerate([1, 2]):
        for b in range(2):
            ranked = ranking(cams[k, b, 0], (8, 8))
            for j, share in enumerate(percentages):
                count = round(share * 64)
                chosen = ranked[:count] if order == "morf" else ranked[64 - count :]
                removed = torch.zeros(8, 8, dtype=torch.bool)
                for p in chosen:
                    removed[divmod(p, 8)] = True
                expected = probability(model, imputation_by_scipy(x[b], removed), cls)
                assert abs(scores[k, b, j].item() - expected) < 1e-9


@pytest.mark.parametrize(
    "call, kwargs, fragment",
    [
        (metrics.deletion, dict(steps=0), r"deletion\(\.\.\., steps=0\): expected a positive int"),
        (metrics.insertion, dict(batch_size=0), r"batch_size=0\): expected a positive int"),
        (
            metrics.deletion,
            dict(baseline="noise"),
            r"baseline=\.\.\.\): expected 'zero', 'mean', "
            r"'blur', a number, or a Tensor",
        ),
        (
            metrics.road,
            dict(percentages=(0.5, 1.0)),
            r"percentages=\(0.5, 1.0\)\): expected "
            r"shares strictly between 0 and 1",
        ),
        (metrics.road, dict(order="up"), r"order='up'\): expected 'morf'"),
        (metrics.deletion, dict(target=9), r"target=9\): index 9 is out of range"),
    ],
)
def test_bad_arguments_are_named(call, kwargs, fragment):
    model, x = classifier(), images(n=2)
    kwargs = {"target": 1, **kwargs}
    with pytest.raises(gf.GradCamError, match=fragment):
        call(model, x, torch.rand(2, 1, 4, 4, dtype=torch.float64), **kwargs)


def test_cams_that_fit_neither_the_batch_nor_the_targets():
    model, x = classifier(), images(n=2)
    with pytest.raises(
        gf.GradCamError,
        match=r"deletion\(\.\.\., cams=\.\.\.\): expected CAMs "
        r"of shape \(B, 1, \*s\).*batch of 2.*got \(3, 1, 4, 4\)",
    ):
        metrics.deletion(model, x, torch.rand(3, 1, 4, 4), 1)
    with pytest.raises(gf.GradCamError, match=r"3 targets but 2 stacked CAMs"):
        metrics.deletion(model, x, torch.rand(2, 2, 1, 4, 4), targets=[0, 1, 2])
    with pytest.raises(
        gf.GradCamError,
        match=r"inputs=\.\.\.\): expected one Tensor \(B, C, "
        r"\*S\)",
    ):
        metrics.deletion(model, x[0, 0], torch.rand(2, 1, 4, 4), 1)
