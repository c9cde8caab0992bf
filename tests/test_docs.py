"""Every ```python block in docs/*.md and README.md runs, in order, per file.

Blocks of one file share a namespace, so a guide reads as one session. A block that
should not run is fenced as ```text or ```bash instead.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    blocks = BLOCK.findall(path.read_text())
    if not blocks:
        pytest.skip(f"{path.name} has no python blocks")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{path.stem}"}
    for number, block in enumerate(blocks, start=1):
        code = compile(block, f"{path.name}[block {number}]", "exec")
        exec(code, namespace)
