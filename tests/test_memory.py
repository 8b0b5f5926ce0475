"""Workers and memory: a worker the kernel's OOM killer kills fails its task with an error
that says so (in a memory cgroup of the test's own, where the machine lets the test make
one), and ``max_memory_per_child`` replaces a worker whose memory grew past it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cgroups
import pytest

import shoal
from scripts import run_script


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Callable[[int], None]]:
    """:func:`cgroups.memory_cgroup`, or the test skipped where the machine does not let
    it make one."""
    try:
        made = cgroups.memory_cgroup(limit)
        admit = made.__enter__()
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup here: {exc}")
    try:
        yield admit
    finally:
        made.__exit__(None, None, None)


def _hog(size: int) -> int:
    block = bytearray(size)
    for i in range(0, size, 4096):
        block[i] = 1  # touch every page: it is resident
    return len(block)


def test_a_worker_the_oom_killer_kills_fails_its_task_saying_so() -> None:
    with memory_cgroup(150 << 20) as admit, shoal.Pool(1) as pool:
        admit(pool.apply(os.getpid))
        with pytest.raises(shoal.WorkerLostError) as lost:
            pool.apply(_hog, (1 << 30,))
        assert lost.value.signal == 9
        assert lost.value.out_of_memory
        assert "out-of-memory killer" in str(lost.value)
        # The pool goes on with a worker in its place (outside the cgroup).
        assert pool.apply(_hog, (1 << 20,)) == 1 << 20


def test_a_worker_killed_for_another_reason_is_not_said_to_be_out_of_memory() -> None:
    with shoal.Pool(1) as pool:
        pid = pool.apply(os.getpid)
        pending = pool.apply_async(_hog_slowly, (30,))
        time.sleep(0.5)
        os.kill(pid, 9)
        with pytest.raises(shoal.WorkerLostError) as lost:
            pending.get(30)
        assert not lost.value.out_of_memory


def _hog_slowly(seconds: float) -> None:
    time.sleep(seconds)


def test_max_memory_per_child_replaces_a_worker_whose_memory_grew(
    tmp_path: Path, pool_start_method: str
) -> None:
    done = run_script(
        """
        import os
        import shoal

        leak = []

        def grow(_):
            leak.append(bytearray(30 << 20))  # a leaky task: 30 MiB more each time
            leak[-1][::4096] = b"x" * len(leak[-1][::4096])
            return os.getpid()

        with shoal.Pool(1, max_memory_per_child=150 << 20, start_method=START) as pool:
            pids = pool.map(grow, range(12), chunksize=1)
            print(len(set(pids)), pool.stats().workers[0].restarts)
        """,
        tmp_path,
        pool_start_method,
    )
    workers, restarts = done.stdout.split(" ", 1)
    assert int(workers) >= 2
    assert restarts.strip() == f"{{'max_memory_per_child': {int(workers) - 1}}}"


def test_max_memory_per_child_is_checked_and_only_the_process_backend_takes_it() -> None:
    with pytest.raises(ValueError, match="max_memory_per_child must be a positive number"):
        shoal.Pool(1, max_memory_per_child=0)
    with pytest.raises(TypeError, match="takes no option 'max_memory_per_child'"):
        shoal.Pool(1, backend="thread", max_memory_per_child=1 << 30)
