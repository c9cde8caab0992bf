"""Every ```python block in docs/*.md and README.md runs, in order, per file.

Blocks of one file share a namespace, so a guide reads as one session. A block that
should not run is fenced as ```text or ```bash instead. A ```text block right after a
python block that prints is that block's output, and must be what it prints (line
breaks aside: long messages are wrapped in the docs).
"""

import contextlib
import io
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n?(?=(\s*)(```)?)", re.S | re.M)
DOCS = [
    path
    for path in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    if "```python" in path.read_text()
]


def blocks(text):
    """``[(language, code, output)]``: output is the ```text block right after, if any."""
    found = [(m.group(1), m.group(2), m.end()) for m in FENCE.finditer(text)]
    result = []
    for i, (language, code, end) in enumerate(found):
        following = found[i + 1] if i + 1 < len(found) else None
        adjacent = (
            following is not None
            and following[0] == "text"
            and text[end : text.index("```text", end)].strip() == ""
        )
        result.append((language, code, following[1] if adjacent else None))
    return [(lang, code, output) for lang, code, output in result if lang == "python"]


def test_the_guides_have_examples():
    assert {p.name for p in DOCS} >= {
        "usage.md",
        "functional.md",
        "jax.md",
        "variants.md",
        "dataset.md",
        "visualization.md",
        "migrating.md",
        "README.md",
    }


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{path.stem}"}
    for number, (_, block, output) in enumerate(blocks(path.read_text()), start=1):
        code = compile(block, f"{path.name}[block {number}]", "exec")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(code, namespace)
        if output is not None and printed.getvalue():
            assert printed.getvalue().split() == output.split(), f"{path.name}[block {number}]"
