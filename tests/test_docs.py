"""The Python examples in README.md and docs/architecture.md run as written (each in a fresh
interpreter, so an example's registrations do not leak into other tests)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
EXAMPLES = [(doc, i, code) for doc in ("README.md", "docs/architecture.md")
            for i, code in enumerate(BLOCK.findall((ROOT / doc).read_text()))]


@pytest.mark.parametrize("doc,index,code", EXAMPLES, ids=[f"{d}#{i}" for d, i, _ in EXAMPLES])
def test_example_runs(doc, index, code):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_examples_were_found():
    assert {d for d, _, _ in EXAMPLES} == {"README.md", "docs/architecture.md"}
