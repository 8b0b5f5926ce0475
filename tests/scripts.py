"""Running a test program the way a user runs theirs: a file, executed as ``__main__``,
with script-level functions and no ``if __name__ == "__main__"`` guard."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import programs


def run_script(
    source: str, folder: Path, start_method: str, *, name: str = "program.py"
) -> subprocess.CompletedProcess[str]:
    """Writes ``source`` to ``folder/name`` and runs it with this interpreter; inside it,
    ``START`` is the pool start method (a string literal). Fails the test, showing both
    streams, if the program exits with an error."""
    path = folder / name
    path.write_text(f"START = {start_method!r}\n" + textwrap.dedent(source))
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    # As a job of its own, whatever it leaves running killed when it ends.
    return programs.run([sys.executable, name], cwd=folder, env=env, timeout=90, check=True)


def pool_worker_prefix(start_method: str) -> str:
    """What multiprocessing calls a Pool's workers in a program that set no start method
    of its own, for shoal's pool ``start_method`` (the zygote stands in for this Python's
    default, the first of ``get_all_start_methods()``)."""
    import multiprocessing

    method = start_method if start_method in ("fork", "spawn") else None
    method = method or multiprocessing.get_all_start_methods()[0]
    return {"fork": "Fork", "spawn": "Spawn", "forkserver": "ForkServer"}[method] + "PoolWorker"
