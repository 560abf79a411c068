"""Every Python example of the README and docs/ marked `<!-- cpu-example -->` runs as written on a CPU,
offline; each runs in a fresh namespace in a scratch folder, against the demo checkpoints."""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = "<!-- cpu-example -->"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path):
    """(code, marked) for every ```python block; marked when MARK is the last non-blank line before it."""
    return python_blocks_of(path.read_text())


def python_blocks_of(text: str):
    for m in BLOCK.finditer(text):
        before = text[:m.start()].rstrip().splitlines()
        yield m.group(1), bool(before) and before[-1].strip() == MARK


def marked_examples():
    return [pytest.param(code, id=f"{path.relative_to(ROOT)}#{i}")
            for path in SOURCES if path.is_file()
            for i, (code, marked) in enumerate(python_blocks(path)) if marked]


def test_examples_are_found():
    assert len(marked_examples()) >= 3
    assert sum(marked for _, marked in python_blocks(ROOT / "README.md")) >= 2


@pytest.mark.parametrize("code", marked_examples())
def test_cpu_example_runs_as_written(code, tmp_path, request, monkeypatch):
    assert "cuda" not in code.lower(), "a CPU example must not need a GPU"
    if not os.environ.get("ZKERNELS_CACHE"):  # CI sets it (the demo's checkpoint is already there)
        monkeypatch.setenv("ZKERNELS_CACHE", str(request.getfixturevalue("demo_cache")))
    monkeypatch.chdir(tmp_path)  # examples write files (an index, a demo checkpoint) where they run
    exec(compile(code, "<readme example>", "exec"), {"__name__": "__readme_example__"})


def test_every_quick_start_example_runs_here():
    """The README's quick starts show only examples that run offline on a CPU (marked, so the test above
    runs them); the hub ids and devices for real models are named in the text beside them."""
    text = (ROOT / "README.md").read_text()
    api = text[text.index("## Rerank"):text.index("## Serving")]
    blocks = list(python_blocks_of(api))
    assert len(blocks) >= 2 and all(marked for _, marked in blocks)
    assert 'from_pretrained("zeroentropy/zerank-2"' in api and 'from_pretrained("zeroentropy/zembed-1"' in api


def test_only_blocks_right_after_the_marker_are_marked(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- cpu-example -->\n\n```python\nprint(1)\n```\n\n```python\nprint(2)\n```\n"
                   "<!-- cpu-example -->\nsome words\n```python\nprint(3)\n```\n")
    assert list(python_blocks(doc)) == [("print(1)\n", True), ("print(2)\n", False), ("print(3)\n", False)]
