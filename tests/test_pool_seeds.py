"""The seed programs, with only their import switched to ``shoal.dummy``, print what they
printed under ``multiprocessing``."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

SEEDS = Path(__file__).resolve().parents[1].parent / "shared" / "seed"
IMPORT = "from multiprocessing import Pool"
EXPECTED_LIST = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"


def _switched(name: str, tmp_path: Path) -> Path:
    source = SEEDS / name
    if not source.exists():
        pytest.skip(f"seed program {source} is not on this machine (expected at ../shared/seed)")
    text = source.read_text()
    assert text.count(IMPORT + "\n") == 1, f"{name} no longer has the import line to switch"
    script = tmp_path / name
    script.write_text(text.replace(IMPORT + "\n", "from shoal.dummy import Pool\n"))
    return script


@pytest.mark.parametrize("name", ["1_pool_map.py", "2_pool_in_class.py"])
def test_seed_program_runs_on_shoal_dummy(name: str, tmp_path: Path) -> None:
    script = _switched(name, tmp_path)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == EXPECTED_LIST
    # The workers print 1..10 in any order. Two threads may interleave one print's text and
    # its newline (as with multiprocessing.dummy), so compare the characters printed, and
    # the numbers themselves whenever every line holds exactly one.
    printed = "".join(lines[:-1]).replace(" ", "")
    assert Counter(printed) == Counter("".join(str(n) for n in range(1, 11)))
    if len(lines) == 11 and all(line.strip().isdigit() for line in lines[:-1]):
        assert sorted(int(line) for line in lines[:-1]) == list(range(1, 11))
