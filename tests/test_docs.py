"""Every ```python block in docs/*.md and README.md runs, in order, per file.

Blocks of one file share a namespace, so a guide reads as one session. A block that
should not run is fenced as ```text or ```bash instead.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
DOCS = [path for path in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
        if BLOCK.search(path.read_text())]


def test_the_guides_have_examples():
    assert {p.name for p in DOCS} >= {"usage.md", "functional.md", "jax.md", "variants.md",
                                       "dataset.md", "visualization.md", "migrating.md",
                                       "README.md"}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    blocks = BLOCK.findall(path.read_text())
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{path.stem}"}
    for number, block in enumerate(blocks, start=1):
        code = compile(block, f"{path.name}[block {number}]", "exec")
        exec(code, namespace)
