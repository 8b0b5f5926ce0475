"""Failure semantics of the process pool, as a table: where the fault happens x what kind of
fault -> what the caller sees. Every case is bounded (pytest-timeout), so a hang fails
loudly, and every case checks that the pool carries on afterwards. The time from fault to
error is printed (``pytest -s``) for the record."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pool_workers import square
from waiting import wait_for

import shoal


def _stamp(path: str) -> None:
    """Writes the moment of the fault, to measure the time from fault to error."""
    Path(path).write_text(repr(time.time()))


def _kill_me(stamp: str = os.devnull) -> None:
    _stamp(stamp)
    os.kill(os.getpid(), signal.SIGKILL)


def _exit_abruptly(stamp: str) -> None:
    _stamp(stamp)
    os._exit(7)


def _segfault(stamp: str) -> None:
    _stamp(stamp)
    ctypes.string_at(0)


def _abort(stamp: str) -> None:
    _stamp(stamp)
    os.abort()


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


# kind -> (task, the worker's exit as WorkerLostError reports it)
DEATHS: dict[str, tuple[Callable[[str], None], tuple[int | None, int | None]]] = {
    "SIGKILL": (_kill_me, (None, signal.SIGKILL)),
    "os._exit(7)": (_exit_abruptly, (7, None)),
    "segfault": (_segfault, (None, signal.SIGSEGV)),
    "abort": (_abort, (None, signal.SIGABRT)),
}


@pytest.fixture
def pool(pool_start_method: str) -> Iterator[shoal.Pool]:
    with shoal.Pool(2, start_method=pool_start_method) as pool:
        yield pool


def _timed(call: Callable[[], object]) -> tuple[BaseException, float]:
    started = time.perf_counter()
    with pytest.raises(BaseException) as info:  # noqa: PT011 (each row says which; checked after)
        call()
    return info.value, time.perf_counter() - started


@pytest.mark.parametrize("kind", sorted(DEATHS))
def test_a_worker_dying_mid_task_fails_only_that_task(
    pool: shoal.Pool, kind: str, tmp_path: Path
) -> None:
    task, (code, sig) = DEATHS[kind]
    stamp = tmp_path / "fault"
    error, _ = _timed(lambda: pool.apply(task, (str(stamp),)))
    seconds = time.time() - float(stamp.read_text())
    print(f"\n{kind}: WorkerLostError {seconds * 1000:.1f} ms after the fault")
    assert isinstance(error, shoal.WorkerLostError), error
    assert error.pid is not None
    assert error.pid != os.getpid()
    assert (error.exitcode, error.signal) == (code, sig)
    assert pool.map(square, range(50)) == [x * x for x in range(50)]


def test_the_dead_workers_queued_tasks_run_elsewhere(pool_start_method: str) -> None:
    # One worker: everything queued behind the fatal task was in its ring.
    with shoal.Pool(1, start_method=pool_start_method) as pool:
        doomed = pool.apply_async(_kill_me)
        after = [pool.apply_async(square, (i,)) for i in range(20)]
        with pytest.raises(shoal.WorkerLostError):
            doomed.get(30)
        assert [r.get(30) for r in after] == [i * i for i in range(20)]


def _die_once(marker: str) -> str:
    """Kills its worker the first time it runs (per marker file), succeeds after."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def test_retries_run_a_task_again_after_its_worker_died(tmp_path: Path) -> None:
    with shoal.Pool(2, retries=1) as pool:
        assert pool.apply(_die_once, (str(tmp_path / "a"),)) == "survived"
    with shoal.Pool(2, retries=0) as pool, pytest.raises(shoal.WorkerLostError):
        pool.apply(_die_once, (str(tmp_path / "b"),))


def test_a_stuck_task_times_out_and_the_others_are_untouched(pool_start_method: str) -> None:
    with shoal.Pool(2, start_method=pool_start_method, task_timeout=0.3) as pool:
        others = pool.map_async(square, range(100))
        error, seconds = _timed(lambda: pool.apply(time.sleep, (30,)))
        print(f"\ntimeout 0.3 s: TaskTimeoutError after {seconds * 1000:.1f} ms")
        assert isinstance(error, shoal.TaskTimeoutError)
        assert isinstance(error, TimeoutError)
        assert 0.3 <= seconds < 2.0
        assert others.get(30) == [x * x for x in range(100)]
        # A per-call limit overrides the pool's.
        assert pool.apply(time.sleep, (0.5,), task_timeout=5) is None
        with pytest.raises(shoal.TaskTimeoutError):
            pool.map(time.sleep, [0.01, 30, 0.01], task_timeout=0.2)
        with pytest.raises(shoal.TaskTimeoutError):
            pool.starmap(time.sleep, [(30,)], task_timeout=0.2)


def test_task_timeout_and_retries_are_checked() -> None:
    for bad in (0, -1, "1", True, math.nan, -math.inf):
        with pytest.raises(ValueError, match="task_timeout"):
            shoal.Pool(1, task_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retries"):
        shoal.Pool(1, retries=-1)
    # One rule for the pool and each call: math.inf is no limit, even under a pool's.
    with shoal.Pool(1, task_timeout=0.5) as pool:
        assert pool.apply(_pid_after, (1.0,), task_timeout=math.inf) > 0
        assert pool.map(_pid_after, [1.0], task_timeout=math.inf)[0] > 0
        for bad in (0, math.nan):
            with pytest.raises(ValueError, match=r"task_timeout .*\(math.inf: no limit\)"):
                pool.apply(abs, (1,), task_timeout=bad)
        assert pool.apply(abs, (-2,)) == 2  # nothing was booked for the refused calls
    with shoal.Pool(1, task_timeout=math.inf) as pool:
        assert pool.apply(abs, (-3,)) == 3


def test_a_task_raising_keyboard_interrupt_is_an_ordinary_error(pool: shoal.Pool) -> None:
    with pytest.raises(KeyboardInterrupt):
        pool.apply(_raise_keyboard_interrupt)
    assert pool.apply(square, (3,)) == 9


def test_maxtasksperchild_replaces_workers_without_losing_or_repeating(
    pool_start_method: str,
) -> None:
    with shoal.Pool(2, maxtasksperchild=3, start_method=pool_start_method) as pool:
        results = pool.map(_pid_and, range(60), chunksize=1)
    assert sorted(i for _, i in results) == list(range(60))
    # 60 chunks of one task, 3 per worker life: at least 20 different workers.
    assert len({pid for pid, _ in results}) >= 20


def _pid_and(i: int) -> tuple[int, int]:
    return os.getpid(), i


# -- failure points other than "running the task" -------------------------------------

_BIG = 64 << 20  # 16 times a ring: a message of many pieces


def _big_result_then_killed(size: int) -> bytes:
    """Returns a result far larger than the result ring; a timer kills the worker while
    it is still pickling or sending it (most runs: sending, the longer part)."""
    data = b"r" * size
    threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return data


def test_a_worker_killed_while_sending_a_large_result(pool_start_method: str) -> None:
    with shoal.Pool(1, start_method=pool_start_method) as pool:
        for _ in range(3):
            with pytest.raises(shoal.WorkerLostError):
                pool.apply(_big_result_then_killed, (_BIG,))
        # The half-sent message is gone with its worker: the next large one is whole.
        assert pool.apply(len, (b"x" * _BIG,)) == _BIG
        assert pool.apply(bytes, (_BIG,)) == bytes(_BIG)


def test_a_worker_killed_while_receiving_a_large_task(pool_start_method: str) -> None:
    # retries=1: whether the task was still arriving (then it goes back to the queue) or
    # had arrived (then it runs again), it must come back right.
    with shoal.Pool(1, start_method=pool_start_method, retries=1) as pool:
        pid = pool.apply(os.getpid)
        big = b"t" * (2 * _BIG)
        pending = pool.apply_async(len, (big,))
        time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        assert pending.get(60) == len(big)
        assert pool.apply(os.getpid) != pid


def test_an_idle_worker_killed_is_replaced_without_a_word(pool_start_method: str) -> None:
    with shoal.Pool(2, start_method=pool_start_method) as pool:
        pids = set(pool.map(_pid_after, [0.2, 0.2], chunksize=1))
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        assert pool.map(square, range(100)) == [x * x for x in range(100)]


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _crash_in_initializer(marker: str = "") -> None:
    """Kills its process; with a marker file, only the first time."""
    if marker:
        path = Path(marker)
        if path.exists():
            return
        path.write_text("crashed once")
    os._exit(3)


def test_an_initializer_that_crashes_once_is_survived(tmp_path: Path) -> None:
    marker = str(tmp_path / "once")
    with shoal.Pool(1, initializer=_crash_in_initializer, initargs=(marker,)) as pool:
        assert pool.apply(square, (7,)) == 49


def test_an_initializer_that_always_crashes_breaks_the_pool_with_a_clear_error(
    pool_start_method: str,
) -> None:
    started = time.perf_counter()
    with shoal.Pool(2, initializer=_crash_in_initializer, start_method=pool_start_method) as pool:
        pending = pool.map_async(square, range(10))
        with pytest.raises(shoal.ShoalError, match="died starting up, by their own hand") as info:
            pending.get(60)
        assert "initializer" in str(info.value)
        # Later calls fail the same way, at once, instead of waiting for workers.
        with pytest.raises(shoal.ShoalError, match="died starting up, by their own hand"):
            pool.apply(square, (2,))
    print(f"\ninitializer crash loop: ShoalError after {time.perf_counter() - started:.2f} s")


def _slow_start(seconds: float) -> None:
    time.sleep(seconds)


def test_workers_killed_from_outside_never_make_the_pool_give_up(
    pool_start_method: str,
) -> None:
    # The OOM killer or an operator: ready workers killed again and again while idle,
    # and workers killed while they start (their initializer sleeps): the pool replaces
    # them every time and still runs what it is given.
    with shoal.Pool(
        2, initializer=_slow_start, initargs=(0.3,), start_method=pool_start_method
    ) as pool:
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
        killed = 0

        def kill_the_live_ones() -> bool:
            nonlocal killed
            for handle in pool._pool:
                if handle.pid is not None and handle.is_alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(handle.pid, signal.SIGKILL)
                        killed += 1
            return killed >= 8

        # Every 0.1 s: some die idle and ready, some while starting.
        wait_for(kill_the_live_ones, "eight workers to kill", 60, interval=0.1)
        assert pool.map(square, range(6), chunksize=1) == [0, 1, 4, 9, 16, 25]


def test_a_stopped_idle_worker_loses_no_chunk_given_to_it() -> None:
    # SIGSTOPped while idle, it is still handed chunks it never takes: past their
    # task_timeout it is killed and they go to the other worker, none lost or failed.
    with shoal.Pool(2, task_timeout=2) as pool:
        stopped = pool._pool[0].pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        try:
            assert pool.map(square, range(20), chunksize=1) == [n * n for n in range(20)]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
        assert stopped not in [h.pid for h in pool._pool]


def test_a_worker_stopped_while_starting_loses_no_chunk_given_to_it() -> None:
    # A worker starting is given chunks as a ready one is. SIGSTOPped before it is ready
    # (its initializer is slow), it is killed once they waited past task_timeout, and
    # they run on the other worker.
    with shoal.Pool(2, initializer=_slow_start, initargs=(1.0,), task_timeout=2) as pool:
        assert pool.map(square, range(4)) == [0, 1, 4, 9]  # both ready
        (first, second) = [h.pid for h in pool._pool]
        assert first is not None
        assert second is not None
        os.kill(first, signal.SIGKILL)

        def replaced() -> list[int | None] | None:
            pids = [h.pid for h in pool._pool]
            return pids if len(pids) == 2 and first not in pids and None not in pids else None

        pids = wait_for(replaced, "a replacement for the killed worker to start", 20)
        starting = next(pid for pid in pids if pid is not None and pid != second)
        os.kill(starting, signal.SIGSTOP)
        try:
            assert pool.map(square, range(20), chunksize=1) == [n * n for n in range(20)]
            assert starting not in [h.pid for h in pool._pool]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(starting, signal.SIGKILL)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-s"]))
