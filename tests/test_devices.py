"""The same CAMs on an accelerator as on the CPU (run where a GPU exists)."""

import pytest
import torch

import gradcam_func as gf
from conftest import assert_matches
from zoo import ZOO

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine"
)


@needs_cuda
@pytest.mark.parametrize("name", ["plain_cnn", "residual", "transformer"])
@pytest.mark.parametrize("autodiff", ["reverse", "forward"])
def test_cuda_equals_cpu(name, autodiff):
    case = ZOO[name](torch.float64)
    x = case.inputs[0]
    targets = [0, 1, lambda out: out[:, 2] - out[:, 0]]
    expected = gf.grad_cam(case.model, case.layer, x, targets=targets, autodiff=autodiff)
    model = case.model.cuda()
    layer = dict(model.named_modules())[
        next(n for n, m in model.named_modules() if m is case.layer)
    ]
    got = gf.grad_cam(model, layer, x.cuda(), targets=targets, autodiff=autodiff)
    assert got.device.type == "cuda"
    assert_matches(got.cpu(), expected)


@needs_cuda
def test_cuda_metrics_and_gradient_free_methods():
    case = ZOO["plain_cnn"](torch.float32)
    x = case.inputs[0]
    cams = gf.cam(case.model, case.layer, x, 1, method="scorecam")
    model = case.model.cuda()
    on_gpu = gf.cam(model, "conv2", x.cuda(), 1, method="scorecam")
    assert_matches(on_gpu.cpu(), cams)
    curves, _ = gf.metrics.deletion(model, x.cuda(), on_gpu, 1, steps=4)
    assert curves.device.type == "cuda"


@needs_cuda
def test_cuda_explain_dataset_moves_each_batch_to_the_model(tmp_path):
    from dataset_job import Data, make_model

    options = dict(targets=[1, 2], batch_size=8, shard_size=16, dtype=torch.float32)
    gf.explain_dataset(make_model(), "3", Data(), out=tmp_path / "cpu", **options)
    gf.explain_dataset(make_model().cuda(), "3", Data(), out=tmp_path / "cuda", **options)
    assert_matches(gf.load_cams(tmp_path / "cuda"), gf.load_cams(tmp_path / "cpu"))
