"""Chaos, for seconds, on every backend: ``chaos.py`` run as a user's program (its functions
in ``__main__``, no guard) while its workers are killed, stopped and starved of memory.
Every task ends once, right or with a named error; the pool goes on; nothing is left
behind; Ctrl-C in the middle ends it. ``make soak`` runs the same for as long as asked."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cgroups
import programs
import pytest

from shoal._process.launch import START_METHODS

CHAOS = Path(__file__).with_name("chaos.py")
SECONDS = 4


def _chaos(tmp_path: Path, *options: str, seconds: float = SECONDS) -> dict[str, Any]:
    """Runs chaos.py with ``options``; its report, after checking nothing of its session
    outlived it."""
    report = tmp_path / "report.json"
    argv = [sys.executable, str(CHAOS), "--seconds", str(seconds), "--json", str(report)]
    # (A stopped worker is freed after task_timeout: a short one ends the run sooner.)
    argv += ["--task-timeout", "2"]
    with programs.started([*argv, *options], stdout=-1, stderr=-1, cwd=CHAOS.parent) as proc:
        try:
            out, err = proc.communicate(timeout=seconds + 150)
        except Exception:
            programs.kill_session(proc.pid)
            out, err = proc.communicate()
            raise AssertionError(f"chaos did not end\n{out}\n{err[-5000:]}") from None
        left = programs.left_in_session(proc.pid)
    sys.stdout.write(f"\n{out}")
    assert report.exists(), f"exit {proc.returncode}\n{out}\n{err[-5000:]}"
    outcome: dict[str, Any] = json.loads(report.read_text())
    assert not outcome["wrong"], "\n".join(outcome["wrong"][:20])
    assert proc.returncode == 0, err[-5000:]
    assert not left, f"still running after chaos.py ended: {left}"
    assert outcome["tasks"] > 0
    assert outcome["right"] > 0
    # Flat: what the second half of the run added to the program's memory is noise
    # (tens of MB of arrays in flight and allocator slack), never a steady leak.
    _, half, end = outcome["rss_mb"]
    assert end - half < 64, f"the program grew from {half:.0f} MB to {end:.0f} MB"
    return outcome


@pytest.mark.timeout(240)
@pytest.mark.parametrize("start_method", START_METHODS)
def test_chaos_on_the_process_backend(tmp_path: Path, start_method: str) -> None:
    outcome = _chaos(tmp_path, "--start-method", start_method)
    assert sum(outcome["faults"].values()) > 0


@pytest.mark.timeout(240)
def test_chaos_on_the_thread_backend(tmp_path: Path) -> None:
    # No worker to kill: its faults are tasks that block until released.
    _chaos(tmp_path, "--backend", "thread")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["dask", "ray"])
def test_chaos_on_a_cluster(tmp_path: Path, backend: str) -> None:
    pytest.importorskip(backend if backend == "ray" else "distributed")
    outcome = _chaos(tmp_path, "--backend", backend, seconds=4)
    assert sum(outcome["faults"].values()) > 0


@pytest.mark.timeout(240)
def test_chaos_with_workers_killed_for_memory(tmp_path: Path) -> None:
    try:
        with cgroups.memory_cgroup(256 << 20):
            pass
    except OSError as error:
        pytest.skip(f"no memory cgroup here: {error}")
    # Without random SIGKILLs: the kernel's OOM kill is a SIGKILL too, and one that comes
    # at the same moment could take the credit for it (see WorkerLostError).
    outcome = _chaos(tmp_path, "--memory-limit", "256", "--no-faults")
    assert outcome["faults"].get("tasks killed for memory", 0) > 0, outcome["faults"]


@pytest.mark.timeout(120)
def test_ctrl_c_in_the_middle_of_chaos_ends_it(tmp_path: Path) -> None:
    argv = [sys.executable, str(CHAOS), "--seconds", "60"]
    with programs.started(argv, stdout=-1, stderr=-1, cwd=CHAOS.parent) as proc:
        time.sleep(4)  # the work and the faults under way (nothing to wait on from outside)
        assert proc.poll() is None, proc.communicate()
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: the whole job
        try:
            _, err = proc.communicate(timeout=30)
        except Exception:
            raise AssertionError("Ctrl-C did not end chaos.py within 30 s") from None
        took = time.monotonic() - sent
        left = programs.left_in_session(proc.pid)
    sys.stdout.write(f"\nCtrl-C ended chaos in {took:.2f} s\n")
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err, err[-3000:]
    assert not left, f"still running after Ctrl-C: {left}"
