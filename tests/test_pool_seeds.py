"""The seed programs (``tests/seed``, the programs shoal was started for), with only their
import line switched to shoal, print what they print under fork-based multiprocessing:
with shoal's default process pool and with ``shoal.dummy``, guard or no guard."""

from __future__ import annotations

import os
import sys
import textwrap
from collections import Counter
from pathlib import Path

import programs
import pytest

SEEDS = Path(__file__).resolve().parent / "seed"
EXPECTED = list(range(1, 11))
GUARD = 'if __name__ == "__main__":\n'


def _switched(name: str, module: str, tmp_path: Path, *, unguarded: bool = False) -> Path:
    text = (SEEDS / name).read_text()
    lines = [line for line in text.splitlines() if line.startswith("from multiprocessing import")]
    assert len(lines) == 1, f"{name} no longer has one import line to switch"
    text = text.replace(lines[0], lines[0].replace("multiprocessing", module))
    if unguarded:
        head, guarded = text.split(GUARD)
        text = head + textwrap.dedent(guarded)
    script = tmp_path / name
    script.write_text(text)
    return script


def _run(script: Path) -> list[str]:
    # With PYTHONUNBUFFERED, a print's text and its newline are two writes, which two
    # processes may interleave (under multiprocessing too); the programs' users see
    # buffered output.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = programs.run([sys.executable, str(script)], timeout=60, cwd=script.parent, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.strip().splitlines()


def _check_output(lines: list[str], *, threads: bool) -> None:
    final = [int(n) for n in lines[-1].strip("[]").split(",")]
    assert sorted(final) == EXPECTED
    printed = lines[:-1]
    if threads:
        # Two threads may interleave one print's text and its newline (as with
        # multiprocessing.dummy), so compare the characters printed.
        assert Counter("".join(printed).replace(" ", "")) == Counter("".join(map(str, EXPECTED)))
    else:
        assert sorted(int(line) for line in printed) == EXPECTED


SEED_NAMES = ["1_pool_map.py", "2_pool_in_class.py", "3_pool_initializer_queues.py"]


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_program_runs_on_shoal(name: str, tmp_path: Path) -> None:
    lines = _run(_switched(name, "shoal", tmp_path))
    _check_output(lines, threads=False)
    if name == "3_pool_initializer_queues.py":
        # The parent prints what it takes off the queue, in the order it takes it.
        assert lines[:-1] == [str(n) for n in eval(lines[-1])]


def test_seed_program_1_runs_on_shoal_without_its_guard(tmp_path: Path) -> None:
    lines = _run(_switched("1_pool_map.py", "shoal", tmp_path, unguarded=True))
    _check_output(lines, threads=False)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_program_runs_on_shoal_dummy(name: str, tmp_path: Path) -> None:
    _check_output(_run(_switched(name, "shoal.dummy", tmp_path)), threads=True)
