"""Many pools created and shut down leave the process as they found it: descriptors,
threads, child processes, shared-memory mappings and /dev/shm."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable

import psutil
import pytest
from waiting import wait_for

import shoal
from conftest import memfd_mappings, open_fds


def _snapshot() -> tuple[set[int], int, set[int], int, set[str]]:
    me = psutil.Process()
    return (
        set(open_fds()),
        len(os.listdir("/proc/self/task")),
        {p.pid for p in me.children(recursive=True) if _running(p)},
        memfd_mappings(),
        set(os.listdir("/dev/shm")),
    )


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _steady() -> tuple[set[int], int, set[int], int, set[str]]:
    """A snapshot once nothing is still winding down (two alike, 100 ms apart)."""
    gc.collect()
    last = _snapshot()
    for _ in range(50):
        time.sleep(0.1)
        gc.collect()
        now = _snapshot()
        if now == last:
            return now
        last = now
    return last


def _warm_up() -> None:
    # The zygote is started once per program; start it before counting.
    with shoal.Pool(1) as warm:
        warm.apply(abs, (1,))
    del warm


def _settle(before: tuple[set[int], int, set[int], int, set[str]]) -> None:
    """Returns once the process holds what it held at ``before``, or fails saying what
    differs. Threads and processes end a moment after join returns: they get that moment."""

    def as_before() -> bool:
        gc.collect()
        return _snapshot() == before

    try:
        wait_for(as_before, "the process to hold what it held before", 5, interval=0.05)
    except TimeoutError:
        pytest.fail(_difference(before))


def _difference(before: tuple[set[int], int, set[int], int, set[str]]) -> str:
    after = _snapshot()
    extra = []
    for pid in after[2] - before[2]:
        try:
            p = psutil.Process(pid)
            extra.append(f"{pid} {p.status()} parent {p.ppid()} {' '.join(p.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            extra.append(f"{pid} gone")
    return f"before {before}, after {after}, new processes {extra}"


def _close_join(pool: shoal.Pool) -> None:
    pool.close()
    pool.join()


def _with_block(pool: shoal.Pool) -> None:
    with pool:
        pass


# Enough for a leak of one descriptor, thread or mapping per pool to show many times over.
POOLS = 300


@pytest.mark.parametrize("end", [_close_join, _with_block], ids=["close-join", "with-block"])
def test_three_hundred_pools_leave_nothing_behind(end: Callable[[shoal.Pool], None]) -> None:
    _warm_up()
    before = _steady()
    started = time.perf_counter()
    for i in range(POOLS):
        pool = shoal.Pool(2)
        if i % 10 == 0:
            assert pool.apply(abs, (-i,)) == i
        end(pool)
    del pool
    elapsed = time.perf_counter() - started
    each = elapsed / POOLS * 1000
    print(f"\n{POOLS} pools in {elapsed:.2f} s ({each:.2f} ms each, one in ten used)")
    _settle(before)


def test_a_pool_dropped_without_close_is_collected_and_its_workers_end() -> None:
    _warm_up()
    before = _steady()
    pool = shoal.Pool(2)
    assert pool.map(abs, [-1, -2]) == [1, 2]
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del pool
    _settle(before)
