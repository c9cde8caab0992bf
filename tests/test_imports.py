"""Importing gradcam_func pulls in no optional library the user did not ask for."""

import subprocess
import sys


def modules_after(statement):
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return set(out)


def test_import_gradcam_func_imports_neither_jax_nor_matplotlib():
    loaded = modules_after("import gradcam_func")
    assert "torch" in loaded
    for optional in (
        "jax",
        "flax",
        "matplotlib",
        "captum",
        "torchmetrics",
        "hypothesis",
        "transformers",
        "scipy",
    ):
        assert optional not in loaded, optional


def test_the_jax_path_imports_jax_only_when_asked():
    assert "jax" in modules_after("import gradcam_func.jax")
    assert "jax" not in modules_after("import gradcam_func.viz, gradcam_func.compat")
