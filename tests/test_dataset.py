"""explain_dataset: equal to direct calls, resumes after a kill, refuses other arguments,
and two torchrun processes (gloo) give the single-process result."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import gradcam_func as gf
from conftest import TOLERANCES, assert_close
from dataset_job import Data, make_model

HERE = os.path.dirname(os.path.abspath(__file__))
JOB = os.path.join(HERE, "dataset_job.py")


def run_job(out, *args):
    return subprocess.run([sys.executable, JOB, str(out), *args], capture_output=True,
                          text=True, check=True, timeout=120)


def direct(targets):
    data = Data()
    return gf.grad_cam(make_model(), "3", data.images, targets=targets).transpose(0, 1)


@pytest.mark.parametrize("targets, expected_targets", [
    ([0, 2], [0, 2]),
    ("label", None),
])
def test_equals_direct_grad_cam(tmp_path, targets, expected_targets):
    data = Data()
    summary = gf.explain_dataset(make_model(), "3", data, targets=targets, out=tmp_path,
                                 batch_size=4, shard_size=8, dtype=torch.float32,
                                 progress=False)
    assert summary == {**summary, "examples": 50, "shards_written": 7, "shards_resumed": 0}
    expected = direct(expected_targets or [data.labels])
    assert_close(gf.load_cams(tmp_path), expected)
    picked = [49, 3, 17]
    assert_close(gf.load_cams(tmp_path, picked), expected[picked])
    if targets == "label":
        _, classes = gf.load_cams(tmp_path, picked, with_classes=True)
        assert torch.equal(classes[:, 0], data.labels[picked])


def test_top_k_stores_the_classes_and_float16_is_close(tmp_path):
    data = Data()
    gf.explain_dataset(make_model(), "3", data, targets=gf.top_k(2), out=tmp_path,
                       batch_size=4, shard_size=8, upsample_to=(16, 16), progress=False)
    cams, classes = gf.load_cams(tmp_path, with_classes=True)
    expected, expected_classes = gf.grad_cam(make_model(), "3", data.images,
                                             targets=gf.top_k(2))
    assert torch.equal(classes, expected_classes.T)
    upsampled = gf.interpolate(expected.flatten(0, 1), (16, 16), "bilinear")
    expected = upsampled.reshape(2, 50, 1, 16, 16).transpose(0, 1)
    torch.testing.assert_close(cams, expected, **TOLERANCES[torch.float16])  # stored so


def test_resumes_after_a_kill_without_redoing_shards(tmp_path):
    job = subprocess.Popen([sys.executable, JOB, str(tmp_path), "--slow", "0.3"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = tmp_path / "index-r0.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        if index.exists() and len(json.loads(index.read_text())["shards"]) >= 2:
            break
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    completed = len(json.loads(index.read_text())["shards"])
    assert 2 <= completed < 7 and not (tmp_path / "index.json").exists()

    model = make_model()
    seen = []
    # count real examples (the shape probe runs on the meta device)
    model[2].register_forward_hook(lambda m, i, o: seen.append(len(o) * (not o.is_meta)))
    summary = gf.explain_dataset(model, "3", Data(), targets="label", out=tmp_path,
                                 batch_size=4, shard_size=8, progress=False)
    assert summary["shards_resumed"] == completed
    assert sum(seen) == 50 - 8 * completed  # no example explained twice
    data = Data()
    expected = direct([data.labels]).to(torch.float16).to(torch.float32)
    assert_close(gf.load_cams(tmp_path), expected)


def test_refuses_a_folder_with_other_arguments(tmp_path):
    gf.explain_dataset(make_model(), "3", Data(), targets=[1], out=tmp_path, batch_size=4,
                       shard_size=8, progress=False)
    with pytest.raises(gf.GradCamError, match=r"explain_dataset\(\.\.\., out=.*\): the folder "
                       r"holds a run with other arguments \(targets: recorded \[1\], now \[2\]\)"):
        gf.explain_dataset(make_model(), "3", Data(), targets=[2], out=tmp_path,
                           batch_size=4, shard_size=8, progress=False)
    other = make_model()
    with torch.no_grad():
        other[0].weight.add_(1)
    with pytest.raises(gf.GradCamError, match=r"model: recorded '[0-9a-f]+', now"):
        gf.explain_dataset(other, "3", Data(), targets=[1], out=tmp_path, batch_size=4,
                           shard_size=8, progress=False)


def test_bad_targets_and_missing_indices(tmp_path):
    with pytest.raises(gf.GradCamError, match=r"targets='labels'\): expected a list of class"):
        gf.explain_dataset(make_model(), "3", Data(), targets="labels", out=tmp_path)
    gf.explain_dataset(make_model(), "3", Data(), targets=[0], out=tmp_path, progress=False)
    with pytest.raises(gf.GradCamError, match=r"examples \[50\] are not in the run"):
        gf.load_cams(tmp_path, [50])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    run_job(single, "--targets", "top2")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                    JOB, str(double), "--targets", "top2"],
                   capture_output=True, text=True, check=True, timeout=180)
    index = json.loads((double / "index.json").read_text())
    indices = [i for shard in index["shards"] for i in shard["indices"]]
    assert sorted(indices) == list(range(50))  # none twice, none missed
    assert {s["file"][:2] for s in index["shards"]} == {"r0", "r1"}
    a, classes_a = gf.load_cams(single, with_classes=True)
    b, classes_b = gf.load_cams(double, with_classes=True)
    assert torch.equal(a, b) and torch.equal(classes_a, classes_b)


def test_cli_explains_a_dataset(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gradcam_func", "explain-dataset", "--model",
         "dataset_job:make_model", "--data", "dataset_job:Data", "--layer", "3",
         "--targets", "0", "3", "--out", str(tmp_path), "--batch-size", "8",
         "--dtype", "float32", "--no-progress"],
        capture_output=True, text=True, check=True, timeout=120,
        env={**os.environ, "PYTHONPATH": HERE})
    assert json.loads(result.stdout.strip().splitlines()[-1])["examples"] == 50
    assert_close(gf.load_cams(tmp_path), direct([0, 3]))
    help_text = subprocess.run([sys.executable, "-m", "gradcam_func", "explain-dataset",
                                "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--model", "--data", "--layer", "--targets", "--upsample-to"):
        assert option in help_text


def test_a_dataloader_lends_its_data_set_and_batch_size(tmp_path):
    loader = torch.utils.data.DataLoader(Data(), batch_size=16)
    model = make_model()
    sizes = []
    model[2].register_forward_hook(lambda m, i, o: sizes.append(len(o)) if not o.is_meta else None)
    gf.explain_dataset(model, "3", loader, targets=[1], out=tmp_path, shard_size=32,
                       dtype=torch.float32, progress=False)
    assert max(sizes) == 16
    assert_close(gf.load_cams(tmp_path), direct([1]))
