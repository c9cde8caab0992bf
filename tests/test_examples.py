"""examples/right_reasons.py: the CAM penalty falls and the CAMs move onto the object."""

import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "right_reasons.py"


def load_example():
    spec = importlib.util.spec_from_file_location("right_reasons", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_penalty_falls_and_cams_move_onto_the_object():
    lines = []
    results = load_example().main(["--steps", "200"], log=lines.append)
    plain, penalized = results["cross-entropy only"], results["with CAM penalty"]
    start = sum(o for _, o in penalized["history"][:10]) / 10
    end = sum(o for _, o in penalized["history"][-10:]) / 10
    assert end < 0.5 * start, (start, end)
    assert penalized["inside"] > plain["inside"] + 0.3
    assert penalized["accuracy"] > plain["accuracy"]
    assert any("CAM mass outside the object" in line for line in lines)


def test_every_target_kind_on_the_trained_multi_task_model(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "beyond_targets", EXAMPLE.parent / "beyond_targets.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--out", str(tmp_path)])
    pointing = results["pointing"]
    assert results["accuracy"] > 0.95
    for kind in ("segmentation", "regression (box width)", "finer", "detection, matched boxes"):
        assert pointing[kind] > pointing["centre blob"] + 0.3, (kind, pointing)
    assert (tmp_path / "beyond_targets.png").exists()
