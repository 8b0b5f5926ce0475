"""tqdm's documented recipes for bars in worker processes, on shoal: the lock handed to
workers through ``initargs`` (``tqdm.set_lock``), and ``tqdm.contrib.concurrent``'s
executor map given shoal's ProcessPoolExecutor. Scripts run as ``__main__``, no guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import run_script

_SET_LOCK = """
import subprocess, sys, time
import {mp} as multiprocessing
from tqdm import tqdm

def work(n):
    with tqdm.get_lock():  # the lock the parent handed over
        return n * 2

if __name__ == "__main__":
    if {method!r} is not None:
        multiprocessing.set_start_method({method!r})
    # A bar first, as the recipe's users do: tqdm's monitor thread is running when the
    # pool forks its workers (multiprocessing warns then, from Python 3.12 on).
    for _ in tqdm(range(3), mininterval=0, miniters=1):
        time.sleep(0.01)
    try:
        lock = tqdm.get_lock()
        with multiprocessing.Pool(2, initializer=tqdm.set_lock, initargs=(lock,)) as pool:
            print(pool.map(work, range(5)))
    except Exception as exc:  # (spawn and forkserver: the lock holds a thread lock)
        print("failed:", type(exc).__name__, exc)
"""


@pytest.mark.parametrize("method", [None, "fork", "spawn", "forkserver"])
def test_the_set_lock_recipe_in_a_pools_initargs(tmp_path: Path, method: str | None) -> None:
    outcomes = []
    for mp in ("multiprocessing", "shoal"):
        source = _SET_LOCK.format(mp=mp, method=method)
        outcomes.append(run_script(source, tmp_path, "unused").stdout.strip())
    theirs, ours = outcomes
    # It runs on shoal where it runs on multiprocessing (the methods that fork), and
    # fails where multiprocessing fails, saying what could not be sent.
    assert theirs.startswith("failed:") == ours.startswith("failed:"), (theirs, ours)
    if theirs.startswith("failed:"):
        assert "_thread.RLock" in ours, ours
    else:
        assert ours == theirs == "[0, 2, 4, 6, 8]"


def test_tqdm_contrib_concurrent_on_shoals_executor(tmp_path: Path) -> None:
    done = run_script(
        """
        import shoal
        from tqdm.contrib.concurrent import _executor_map

        offset = 100
        print(_executor_map(shoal.ProcessPoolExecutor, lambda n: n + offset, range(4),
                            max_workers=2, chunksize=1))
        """,
        tmp_path,
        "zygote",
    )
    assert done.stdout.splitlines() == ["[100, 101, 102, 103]"]
    assert "4/4" in done.stderr  # tqdm's bar ran to its end
