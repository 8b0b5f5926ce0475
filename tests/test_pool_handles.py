"""``pool._pool``: the running workers as multiprocessing lists them, which programs read
to find worker pids."""

from __future__ import annotations

import os
import signal

import pytest
from waiting import wait_for

import shoal
from scripts import pool_worker_prefix


def _own_pid(_: object) -> int:
    return os.getpid()


def test_handles_name_the_worker_processes(pool_start_method: str) -> None:
    with shoal.Pool(2, start_method=pool_start_method) as pool:
        handles = pool._pool
        assert len(handles) == 2
        assert all(h.is_alive() for h in handles)
        pids = set(pool.map(_own_pid, range(20), chunksize=1))
        assert pids <= {h.pid for h in handles}
        prefix = pool_worker_prefix(pool_start_method)
        assert all(h.name.startswith(f"{prefix}-") for h in handles)


def test_a_killed_worker_ends_with_minus_its_signal_and_is_replaced() -> None:
    with shoal.Pool(2) as pool:
        victim = pool._pool[0]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        wait_for(lambda: not victim.is_alive(), "the killed worker's handle to say so")
        assert victim.exitcode == -signal.SIGKILL
        wait_for(lambda: len(pool._pool) == 2, "a replacement worker")
        assert victim.pid not in {h.pid for h in pool._pool}


@pytest.mark.parametrize("backend", ["thread"])
def test_thread_workers_are_listed_without_a_pid(backend: str) -> None:
    with shoal.Pool(3, backend=backend) as pool:
        assert sorted(h.pid is None and h.is_alive() for h in pool._pool) == [True] * 3


def test_a_running_pool_collected_warns_and_is_stopped() -> None:
    import gc

    pool = shoal.Pool(1)
    pids = [h.pid for h in pool._pool if h.pid is not None]
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):  # noqa: PT031 (the del makes the collection warn)
        del pool
        gc.collect()
    wait_for(lambda: not any(_exists(pid) for pid in pids), f"workers {pids} to exit")


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False  # reaped between the two looks
