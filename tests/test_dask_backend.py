"""backend="dask" on a real cluster: a program as users write it (script-level functions,
no guard) on the cluster the pool starts, a cluster worker killed mid-task, retries, and
the errors for what Dask cannot do or cannot reach. The Pool's behaviour suite runs on
the session's cluster too ("dask-session" in pool_workers.BACKENDS)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

import shoal
from scripts import run_script

pytest.importorskip("distributed")

PROGRAM = """
import shoal

def init(offset):
    global OFFSET
    OFFSET = offset

def task(x):
    return OFFSET + x

with shoal.Pool(2, initializer=init, initargs=(100,), backend="dask") as pool:
    assert pool.map(task, range(10)) == [100 + x for x in range(10)]
    assert sorted(pool.imap_unordered(lambda x: -x, range(5))) == [-4, -3, -2, -1, 0]
    try:
        pool.apply(lambda: 1 / 0)
    except ZeroDivisionError as exc:
        assert "1 / 0" in str(exc.__cause__)
    else:
        raise AssertionError("no error")
print("ok")
"""


def test_a_script_runs_on_the_cluster_the_pool_starts(tmp_path: Path) -> None:
    assert "ok" in run_script(PROGRAM, tmp_path, "zygote").stdout


def _pid_then_wait(path: str) -> int:
    with open(path, "w") as file:
        file.write(str(os.getpid()))
    time.sleep(60)
    return os.getpid()


def _kill_when_written(path: Path) -> int:
    def written() -> int | None:
        text = path.read_text() if path.exists() else ""
        return int(text) if text else None

    pid = wait_for(written, f"the task's pid in {path}", 60)
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.parametrize("retries", [0, 1])
def test_a_cluster_worker_killed_mid_task_costs_that_task_only(
    tmp_path: Path, retries: int
) -> None:
    flag = tmp_path / "pid"
    with shoal.Pool(backend="dask-session", retries=retries) as pool:
        doomed = pool.apply_async(_pid_then_wait, (str(flag),))
        killed = _kill_when_written(flag)
        if retries:
            # It runs again on a (restarted) worker, which writes its own pid.
            flag.write_text("")
            killed_again = _kill_when_written(flag)
            assert killed_again != killed
            with pytest.raises(shoal.WorkerLostError, match="Dask worker"):
                doomed.get(timeout=60)
        else:
            with pytest.raises(shoal.WorkerLostError, match="Dask worker"):
                doomed.get(timeout=60)
        assert pool.map(abs, [-1, -2], chunksize=1) == [1, 2]  # the pool goes on


def test_what_dask_cannot_do_is_refused_plainly() -> None:
    with pytest.raises(ValueError, match="maxtasksperchild"):
        shoal.Pool(1, maxtasksperchild=1, backend="dask-session")
    with shoal.Pool(backend="dask-session") as pool, pytest.raises(ValueError, match="timeout"):
        pool.apply(abs, (-1,), task_timeout=1)
    with pytest.raises(TypeError, match="the dask backend takes no option 'start_method'"):
        shoal.Pool(1, backend="dask", start_method="spawn")


def test_an_unreachable_scheduler_fails_within_seconds_naming_it() -> None:
    # (Within CONNECT_TIMEOUT: the suite's per-test timeout fails a hang.)
    with pytest.raises(shoal.ShoalError, match=r"tcp://127\.0\.0\.1:9"):
        shoal.Pool(backend="dask", address="tcp://127.0.0.1:9")


def _read_shared(handle: shoal.Shared[Any], lo: int, hi: int) -> tuple[int, str]:
    return int(handle.value[lo:hi].sum()), handle.__reduce__()[0].__name__


def test_a_shared_object_is_scattered_to_the_workers_once() -> None:
    np = pytest.importorskip("numpy")
    table = shoal.shared(np.arange(1_000_000))
    with shoal.Pool(backend="dask-session") as pool:
        answers = pool.starmap(_read_shared, [(table, 0, 10), (table, 10, 20)], chunksize=1)
        from_closure = pool.apply(lambda: int(table.value[-1]))
        assert len(pool._core.backend._scattered) == 1  # type: ignore[attr-defined]
    assert answers == [(45, "shared_from_cluster"), (145, "shared_from_cluster")]
    assert from_closure == 999_999


def test_a_function_too_large_to_ride_in_each_task_becomes_a_task_of_its_own() -> None:
    from shoal.backends._cluster.shipping import INLINE_BYTES

    table = list(range(INLINE_BYTES))  # pickles to more than the inline limit
    with shoal.Pool(backend="dask-session") as pool:
        assert pool.map(lambda i: table[i] * 2, range(0, 100, 7), chunksize=2) == [
            2 * i for i in range(0, 100, 7)
        ]
        assert pool._core.backend._functions.stored() == 1  # type: ignore[attr-defined]
        assert pool.map(abs, [-1]) == [1]  # a small one rides along
        assert pool._core.backend._functions.stored() == 1  # type: ignore[attr-defined]


def test_a_shared_object_lost_with_the_workers_is_scattered_again_and_its_tasks_run() -> None:
    # Every Dask worker holding a scattered shoal.shared object is killed: the tasks that
    # need it are cancelled by Dask (they name it as a dependency) rather than left to wait
    # for data no worker has; the pool scatters it again from its handle and resends them.
    np = pytest.importorskip("numpy")
    table = shoal.shared(np.arange(100_000, dtype=np.float64))
    # (retries: the scheduler may hand a chunk to a killed worker it has not yet seen go.)
    with shoal.Pool(2, backend="dask", retries=2) as pool:
        assert pool.map(lambda i: float(table.value[i]), [1, 2]) == [1.0, 2.0]
        client = pool._core.backend._client  # type: ignore[attr-defined]
        for pid in client.run(os.getpid).values():
            os.kill(pid, signal.SIGKILL)
        client.wait_for_workers(2, timeout=60)  # the nannies start new ones
        assert pool.map(lambda i: float(table.value[i]), [3, 4], chunksize=1) == [3.0, 4.0]
        fresh = shoal.shared(np.arange(10.0))
        assert pool.map(lambda i: float(fresh.value[i]), [5, 6]) == [5.0, 6.0]


def test_a_released_shared_object_is_not_kept_on_the_cluster_by_the_pool() -> None:
    import gc

    np = pytest.importorskip("numpy")
    table = shoal.shared(np.arange(1000))
    with shoal.Pool(backend="dask-session") as pool:
        assert pool.starmap(_read_shared, [(table, 0, 10)])[0][0] == 45
        backend: Any = pool._core.backend
        assert len(backend._holding) == 1
        del table
        gc.collect()
        assert backend._holding == {}
        assert backend._sources == {}
