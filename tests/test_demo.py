"""The README's main job: `gradcam-func demo` trains, explains, writes a PNG, scores >= 0.9."""

import re
import subprocess
import sys

import matplotlib.image


def test_demo_writes_the_picture_and_points_at_the_objects(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gradcam_func", "demo", "--out", str(tmp_path), "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    pointing = float(re.search(r"pointing-game accuracy .*: ([0-9.]+)", result.stdout)[1])
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", result.stdout)[1])
    assert pointing >= 0.9 and accuracy >= 0.9, result.stdout
    rows = {
        name: [float(v) for v in values.split()]
        for name, values in re.findall(
            r"^(Grad-CAM|random|centre blob) +([0-9. ]+)$", result.stdout, re.M
        )
    }
    grad_cam, others = rows["Grad-CAM"], [rows["random"], rows["centre blob"]]
    for other in others:  # pointing, deletion AUC (lower is better), insertion AUC
        assert grad_cam[0] > other[0] and grad_cam[1] < other[1] and grad_cam[2] > other[2]
    similarity = [
        float(v)
        for v in re.findall(
            r": (-?[0-9.]+)", result.stdout.split("cascading randomization")[1].splitlines()[1]
        )
    ]
    assert len(similarity) == 7 and max(similarity) < 0.5, result.stdout
    picture = matplotlib.image.imread(tmp_path / "gradcam_demo.png")
    assert picture.ndim == 3 and picture.shape[0] > 400 and picture.shape[1] > 400
    assert picture[..., :3].std() > 0.05  # not a blank canvas
    assert "training" in result.stderr  # the progress bar


def test_demo_help_lists_its_options():
    result = subprocess.run(
        [sys.executable, "-m", "gradcam_func", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for option in ("--out", "--seed", "--epochs"):
        assert option in result.stdout
