"""shoal.Pool's life: close and join, terminate, the context manager, finalization,
interruption, on every backend."""

from __future__ import annotations

import concurrent.futures
import gc
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import programs
import pytest
from pool_workers import (
    KEEPS_ITS_WORKERS,
    OWN_WORKERS,
    add,
    broken_initializer,
    fail_on,
    square,
)
from waiting import wait_for

import shoal
from conftest import memfd_mappings, open_fds
from scripts import run_script


def test_close_then_join_finishes_the_work(backend: str) -> None:
    pool = shoal.Pool(2, backend=backend)
    results = [pool.apply_async(square, (i,)) for i in range(20)]
    lazy = pool.imap(square, range(200), chunksize=1)
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pool.close()
    pool.join()
    assert [r.get(0) for r in results] == [i * i for i in range(20)]
    assert list(lazy) == [i * i for i in range(200)]
    pool.join()  # joining again is harmless


@pytest.mark.parametrize("end", ["close", "terminate"])
def test_use_after_close_or_terminate_raises(backend: str, end: str) -> None:
    pool = shoal.Pool(1, backend=backend)
    getattr(pool, end)()
    calls: list[Callable[[], object]] = [
        lambda: pool.map(square, [1]),
        lambda: pool.map_async(square, [1]),
        lambda: pool.starmap(add, [(1, 2)]),
        lambda: pool.imap(square, [1]),
        lambda: pool.imap_unordered(square, [1]),
        lambda: pool.apply(square, (1,)),
        lambda: pool.apply_async(square, (1,)),
        lambda: pool.submit(square, 1),
        lambda: pool.__enter__(),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="Pool not running"):
            call()
    pool.terminate()
    pool.join()


def test_terminate_cancels_pending_work() -> None:
    gate = threading.Event()
    pool = shoal.Pool(1, backend="thread")
    running = pool.apply_async(gate.wait, (30,))
    queued = [pool.apply_async(square, (i,)) for i in range(10)]
    future = pool.submit(square, 3)
    it = pool.imap(square, range(100))
    threading.Timer(0.05, gate.set).start()
    pool.terminate()
    pool.join()
    pending = [r for r in queued if not r.successful()]
    assert pending, "terminate() left nothing to cancel"
    for r in pending:
        with pytest.raises(CancelledError):
            r.get(0)
    assert running.ready()
    assert future.done()
    with pytest.raises(CancelledError):
        list(it)


def test_context_manager_terminates_on_exit(backend: str) -> None:
    with shoal.Pool(2, backend=backend) as pool:
        assert pool.map(square, [1, 2]) == [1, 4]
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(square, (1,))
    pool.join()


def test_an_abandoned_pool_does_not_block_interpreter_exit() -> None:
    script = (
        "import shoal, time\n"
        "pool = shoal.Pool(2, backend='thread')\n"
        "pool.apply_async(time.sleep, (60,))\n"
        "assert shoal.Pool(2).map(abs, [-1]) == [1]\n"
        "print('bye')\n"
    )
    done = programs.run([sys.executable, "-c", script], timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "bye\n"


def test_a_dropped_pool_is_collected_and_shut_down(backend: str) -> None:
    # Each pool dropped while running warns, as multiprocessing's do.
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        assert shoal.Pool(2, backend=backend).map(square, [3]) == [9]
    # (The pool goes once its last result is in: all of this is inside.)
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):  # noqa: PT031
        result: Any = shoal.Pool(1, backend=backend).apply_async(square, (4,))
        assert result.get(30) == 16  # a pending result kept its pool alive
        del result
        gc.collect()
    pool = shoal.Pool(2, backend=backend)
    assert pool.apply(square, (5,)) == 25
    ref, core = weakref.ref(pool), pool._core
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):  # noqa: PT031 (the del makes the collection warn)
        del pool
        gc.collect()
    assert ref() is None
    assert core.state == "TERMINATE"
    assert core.backend.join(30)


def _use_and_drop(backend: str) -> weakref.ref[Any]:
    """Runs a pool through calls that succeed and calls that fail (each way a task's error
    reaches the caller), closes and joins it, and returns a reference to its core."""
    pool = shoal.Pool(2, backend=backend)
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
    for call in (
        lambda: pool.apply(fail_on, (0,)),
        lambda: pool.map(fail_on, range(3)),
        lambda: list(pool.imap(fail_on, range(3))),
        lambda: pool.submit(fail_on, 0).result(),
    ):
        try:
            call()
        except ValueError:
            pass
        else:
            raise AssertionError("the task's error never reached the caller")
    pool.close()
    pool.join()
    return weakref.ref(pool._core)


def _pool_memory() -> tuple[int, int]:
    """This process's shoal memfd descriptors and mappings."""
    descriptors = sum(link.startswith("/memfd:shoal-") for link in open_fds().values())
    return descriptors, memfd_mappings()


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_a_finished_pool_is_freed_without_the_garbage_collector(backend: str) -> None:
    # A reference cycle through a pool would keep it, and its shared memory and
    # descriptors, until the collector next runs: maybe thousands of pools later.
    gc.collect()
    memory = _pool_memory()
    gc.disable()
    try:
        core = _use_and_drop(backend)
        assert core() is None, gc.get_referrers(core())
        assert _pool_memory() == memory
    finally:
        gc.enable()


def test_a_thread_pool_whose_initializer_failed_is_freed_without_the_collector() -> None:
    gc.collect()
    gc.disable()
    try:
        pool = shoal.Pool(2, broken_initializer, backend="thread")
        message = ""
        try:
            pool.apply(square, (1,))
        except OSError as exc:  # (no pytest.raises: its record of the error would hold it)
            message = str(exc)
        assert "cannot open the model" in message
        pool.close()
        pool.join()
        core = weakref.ref(pool._core)
        del pool
        assert core() is None, gc.get_referrers(core())
    finally:
        gc.enable()


_FREED_IN_A_SCRIPT = """
import gc, os, weakref
import shoal

def memory_descriptors():
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return sum(link.startswith(("/memfd:shoal-arena", "/memfd:shoal-bell")) for link in links)

def fail(x):
    raise ValueError(x)

def use_and_drop():
    scale = 3
    with shoal.Pool(2, start_method=START) as pool:
        print(pool.map(lambda x: x * scale, range(4)))
        for call in (lambda: pool.apply(fail, (1,)), lambda: list(pool.imap(fail, [2]))):
            try:
                call()
            except ValueError as exc:
                print("failed", exc)
        pool.close()
        pool.join()
    return weakref.ref(pool._core)

gc.disable()
before = memory_descriptors()
core = use_and_drop()
print(core() is None, memory_descriptors() == before)
"""


def test_a_pool_in_a_script_is_freed_without_the_collector(
    tmp_path: Path, pool_start_method: str
) -> None:
    # Script-level functions and a closure, sent by value, under every start method.
    done = run_script(_FREED_IN_A_SCRIPT, tmp_path, pool_start_method)
    assert done.stdout.splitlines() == ["[0, 3, 6, 9]", "failed 1", "failed 2", "True True"]


def test_an_interrupted_map_drops_its_remaining_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[int] = []
    gate = threading.Event()

    def task(x: int) -> int:
        gate.wait(30)
        ran.append(x)
        return x

    def interrupted_get(self: object, timeout: float | None = None) -> object:
        raise KeyboardInterrupt

    with shoal.Pool(1, backend="thread") as pool:
        monkeypatch.setattr(shoal.AsyncResult, "get", interrupted_get)
        with pytest.raises(KeyboardInterrupt):
            pool.map(task, range(1000), chunksize=1)
        monkeypatch.undo()
        gate.set()
        assert pool.apply(len, ([1, 2],)) == 2
    assert len(ran) < 100


def test_a_task_raising_system_exit_fails_only_its_call() -> None:
    def leave() -> None:
        raise SystemExit(3)

    with shoal.Pool(1, backend="thread") as pool:
        with pytest.raises(SystemExit):
            pool.apply(leave)
        assert pool.map(square, [1, 2, 3]) == [1, 4, 9]


def test_join_runs_every_queued_task_even_when_workers_reach_their_limit(backend: str) -> None:
    if backend in KEEPS_ITS_WORKERS:
        pytest.skip(KEEPS_ITS_WORKERS[backend])
    # A new Ray worker process takes about a second to start: fewer replacements there.
    n = 4 if backend == "ray-session" else 50
    pool = shoal.Pool(2, maxtasksperchild=1, backend=backend)
    result = pool.map_async(square, range(n), chunksize=1)
    lazy = pool.imap_unordered(square, range(n), chunksize=1)
    pool.close()
    pool.join()
    assert result.get(0) == [x * x for x in range(n)]
    assert sorted(lazy) == [x * x for x in range(n)]


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_futures_of_a_terminated_pool_end_cancelled(backend: str) -> None:
    pool = shoal.Pool(1, backend=backend)
    # (A thread cannot be stopped: its task waits for an event set after terminate.)
    release = threading.Event()
    running = pool.submit(time.sleep if backend == "process" else release.wait, 20)
    pending = [pool.submit(square, i) for i in range(20)]

    def marked_running() -> bool:
        running.cancel()  # too late to take back once a worker has it: marks it running
        return running.running()

    wait_for(marked_running, "the first task to be marked running", 20)
    pool.terminate()
    release.set()
    pool.join()
    futures: list[concurrent.futures.Future[Any]] = [running, *pending]
    _, not_done = concurrent.futures.wait(futures, timeout=10)
    assert not not_done
    for future in futures:
        assert future.cancelled()
        assert future.done()
        assert not future.running()
        with pytest.raises(CancelledError):
            future.result(0)
        with pytest.raises(CancelledError):
            future.exception(0)


def test_a_cancelled_future_counts_as_done_for_wait() -> None:
    with shoal.Pool(1) as pool:
        busy = pool.submit(time.sleep, 0.3)
        queued = [pool.submit(square, i) for i in range(50)]
        assert queued[-1].cancel()
        done, _ = concurrent.futures.wait([queued[-1]], timeout=5)
        assert done == {queued[-1]}
        busy.result(30)
