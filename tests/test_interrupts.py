"""Ctrl-C in the caller and a killed parent, with real scripts in subprocesses: the caller
gets KeyboardInterrupt promptly, leaving the with-block leaves no worker behind, and when
the parent dies every worker and the zygote follow it. Survivors are looked for with
psutil."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from subprocess import PIPE, Popen

import programs
import psutil
import pytest
from waiting import wait_for

from shoal._process.launch import START_METHODS

# What the script waits on, and how many of its tasks run at once (each says so).
WAITS = {
    "map": ("pool.map(nap, [30] * 4, chunksize=1)", 2),
    "imap": ("list(pool.imap(nap, [30] * 4))", 2),
    "get": ("pool.apply_async(nap, (30,)).get()", 1),
}

CTRL_C_SCRIPT = """
import os, sys, time
import shoal

def nap(seconds):
    os.write(1, b"running\\n")  # one write: lines of two workers never mix
    time.sleep(seconds)

try:
    with shoal.Pool(2, start_method={method!r}) as pool:
        pool.map(abs, range(4))
        print("ready", flush=True)
        {wait}
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
print("left", flush=True)
time.sleep(30)
"""


def _started(source: str, tmp_path: Path) -> contextlib.AbstractContextManager[Popen[str]]:
    """The script ``source``, running as a terminal's foreground job would (a session of
    its own, SIGINT at its default); on leaving, it and all it started are killed."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return programs.started([sys.executable, str(script)], stdout=PIPE)


def _expect(proc: Popen[str], word: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(word), f"expected {word!r}, got {line!r}"
    return line


def _all_gone(pids: list[int]) -> bool:
    """Whether every one of ``pids`` has exited (a zombie counts as gone)."""
    return not any(_alive(p) for p in pids)


def _tracker(process: psutil.Process) -> bool:
    """Whether ``process`` is multiprocessing's resource tracker."""
    return "multiprocessing.resource_tracker" in " ".join(process.cmdline())


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("wait", sorted(WAITS))
@pytest.mark.parametrize("method", START_METHODS)
def test_ctrl_c_interrupts_the_wait_and_the_with_block_leaves_no_worker(
    wait: str, method: str, tmp_path: Path
) -> None:
    call, running = WAITS[wait]
    with _started(CTRL_C_SCRIPT.format(method=method, wait=call), tmp_path) as proc:
        _expect(proc, "ready")
        for _ in range(running):
            _expect(proc, "running")
        family = psutil.Process(proc.pid).children(recursive=True)
        # Whatever the start method, importing the Pool started the program's zygote (a
        # child running shoal._process.zygote; its workers are its own children).
        zygotes = [
            p.pid
            for p in family
            if p.ppid() == proc.pid and "shoal._process.zygote" in " ".join(p.cmdline())
        ]
        # (The program's multiprocessing resource tracker, which the workers share, is
        # the program's too: it lives until the program and its workers are gone.)
        workers = [p.pid for p in family if p.pid not in zygotes and not _tracker(p)]
        assert len(workers) == 2, family
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        line = _expect(proc, "interrupted")
        delay = float(line.split()[1]) - sent
        print(f"\n{method}/{wait}: KeyboardInterrupt after {delay * 1000:.1f} ms")
        assert delay < 10, "the wait went on long after Ctrl-C"  # (a hang, not a speed)
        _expect(proc, "left")
        wait_for(lambda: _all_gone(workers), f"the workers {workers} to exit", 5)
        # The zygote is the program's, not the pool's: it lives until the program ends.
        assert all(_alive(z) for z in zygotes)
        proc.kill()
        proc.wait(10)
        wait_for(lambda: _all_gone(zygotes), f"the zygote {zygotes} to exit", 5)


PARENT_SCRIPT = """
import os, time
import shoal

def nap(seconds):
    os.write(1, b"running\\n")  # one write: lines of two workers never mix
    time.sleep(seconds)

pool = shoal.Pool(2, start_method={method!r})
pool.map(abs, range(4))
busy = pool.map_async(nap, [30, 30], chunksize=1)
time.sleep(60)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_a_killed_parent_takes_its_workers_and_zygote_along(method: str, tmp_path: Path) -> None:
    with _started(PARENT_SCRIPT.format(method=method), tmp_path) as proc:
        _expect(proc, "running")
        _expect(proc, "running")
        children = psutil.Process(proc.pid).children(recursive=True)
        family = [p.pid for p in children]
        # Two workers, the zygote (started with the Pool's import, whatever the method)
        # and the resource tracker they share: all go.
        assert len(family) == 4, family
        assert sum(_tracker(p) for p in children) == 1, children
        proc.kill()
        killed = time.monotonic()
        proc.wait(10)
        wait_for(lambda: _all_gone(family), f"the killed parent's children {family} to exit", 5)
        print(f"\n{method}: family gone after {(time.monotonic() - killed) * 1000:.1f} ms")
