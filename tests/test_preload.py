"""The zygote imports the installed packages a program had imported before it forks the
program's workers: they start with them loaded (the standard library's modules are left
to the workers). SHOAL_PRELOAD=0 and SHOAL_PRELOAD_SKIP
opt out; a module that fails to import is left to the workers; one that leaves a thread
running retires that zygote for a new one that never imports it."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import run_script

PROGRAM = """
import os, sys
import decimal, numpy, tqdm  # modules the tasks below never name
from shoal import Pool

def loaded(_):
    return tuple(name in sys.modules for name in ("numpy", "tqdm", "decimal"))

with Pool(2, start_method=START) as pool:
    print(sorted(set(pool.map(loaded, range(4), chunksize=1))))
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "[(True, True, False)]"),
        ({"SHOAL_PRELOAD": "0"}, "[(False, False, False)]"),
        ({"SHOAL_PRELOAD_SKIP": "numpy, json"}, "[(False, True, False)]"),
    ],
    ids=["default", "off", "skip"],
)
def test_workers_start_with_the_programs_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert run_script(PROGRAM, tmp_path, "zygote").stdout.strip() == expected


def test_other_start_methods_import_only_what_tasks_need(tmp_path: Path) -> None:
    assert run_script(PROGRAM, tmp_path, "spawn").stdout.strip() == "[(False, False, False)]"


SURPRISES = """
import os, sys, threading, time
sys.path.insert(0, os.path.join(os.getcwd(), "lib"))
import starts_a_thread, fails_in_a_fresh_interpreter, plain
from shoal import Pool
import shoal._process.preload as preload
import shoal._process.zygote as zygote

# These three stand for installed modules (the preload takes only those).
preload._install_dirs = lambda: (os.path.join(os.getcwd(), "lib", ""),)

def loaded(_):
    names = ("starts_a_thread", "fails_in_a_fresh_interpreter", "plain")
    return tuple(name in sys.modules for name in names)

with Pool(2, start_method=START) as pool:
    print(sorted(set(pool.map(loaded, range(4), chunksize=1))))
    print(sorted(preload._threaded), len(zygote._retired))
with Pool(2, start_method=START) as pool:  # a later pool: the same zygote, no new retiree
    print(sorted(set(pool.map(loaded, range(4), chunksize=1))), len(zygote._retired))
"""


def test_a_module_that_starts_a_thread_or_fails_never_breaks_the_pool(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "starts_a_thread.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
    )
    # The zygote runs without site processing (python -S); the program does not.
    (lib / "fails_in_a_fresh_interpreter.py").write_text(
        "import sys\nif sys.flags.no_site:\n    raise ImportError('not here')\n"
    )
    (lib / "plain.py").write_text("VALUE = 1\n")
    lines = run_script(SURPRISES, tmp_path, "zygote").stdout.splitlines()
    assert lines == [
        "[(False, False, True)]",
        "['starts_a_thread'] 1",
        "[(False, False, True)] 1",
    ]


REPORT = """
import colorsys  # a standard library module nothing of shoal's imports: never preloaded
import numpy
import shoal._process.zygote as zygote
from shoal import Pool

with Pool(1, start_method=START) as pool:
    pool.apply(abs, (1,))
known = zygote.shared_zygote().preloaded
# numpy was sent; the worker's loop the zygote imported on its own, and reported; what
# only the program has is not in the report.
print("numpy" in known, "shoal._process.worker" in known, "colorsys" in known)
"""


def test_the_zygote_reports_what_it_has_so_later_preloads_send_only_the_rest(
    tmp_path: Path,
) -> None:
    assert run_script(REPORT, tmp_path, "zygote").stdout.split() == ["True", "True", "False"]
