"""Docs that run: the python examples of the README and docs/, every docstring example, and
the demo, so the docs cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Modules whose docstrings carry examples (each must have at least one).
MODULES = [
    "shoal",
    "shoal.dummy",
    "shoal.dummy._queue",
    "shoal.pool",
    "shoal.pool._pool",
    "shoal.pool._results",
    "shoal.pool._chunks",
    "shoal.pool._cpu",
    "shoal.backends",
    "shoal.backends.base",
    "shoal.backends.thread",
    "shoal.dummy._pool",
    "shoal._buffers",
    "shoal.backends.process",
    "shoal._namespaces",
]
# Modules checked even though they may hold no example of their own (shoal.Queue is
# declared in shoal._queue but presents itself as shoal.Queue, so its examples run there).
OPTIONAL = ["shoal._pickling", "shoal._queue"]


def run_python_blocks(doc: Path, tmp_path: Path) -> list[str]:
    """Runs each python block of a markdown file as a script; returns what each printed."""
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert blocks, f"{doc.name} has no python example"
    outputs = []
    for i, block in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(block)
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    return outputs


def test_readme_example_runs(tmp_path: Path) -> None:
    outputs = run_python_blocks(ROOT / "README.md", tmp_path)
    assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in outputs[-1]


def test_the_backends_doc_examples_run(tmp_path: Path) -> None:
    outputs = run_python_blocks(ROOT / "docs" / "backends.md", tmp_path)
    assert "[1, 2, 3] [0, 1, 2]" in outputs[-1]


@pytest.mark.parametrize("name", MODULES + OPTIONAL)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failed == 0
    assert attempted > 0 or name in OPTIONAL


def test_demo_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "demo"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "primes" in done.stdout and "msg/s" in done.stdout
