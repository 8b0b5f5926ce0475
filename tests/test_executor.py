"""shoal.Executor, ProcessPoolExecutor and ThreadPoolExecutor: concurrent.futures'
contract on every backend, shoal's failure contract (a dead worker fails one future; a
failing initializer breaks the executor with a BrokenExecutor), and programs that change
their import from concurrent.futures to shoal, run as scripts under every start method.
(CPython's own tests of the contract run in test_cf_suite.py.)"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pool_workers import (
    KEEPS_ITS_WORKERS,
    OWN_WORKERS,
    add,
    broken_initializer,
    fail_on,
    square,
    worker_name,
)
from waiting import wait_for

import shoal
from scripts import run_script


def test_submit_map_and_as_completed_on_every_backend(backend: str) -> None:
    with shoal.Executor(2, backend=backend) as ex:
        futures = [ex.submit(add, n, 1) for n in range(20)]
        assert sorted(f.result(timeout=60) for f in cf.as_completed(futures)) == list(range(1, 21))
        assert list(ex.map(add, range(5), range(5))) == [0, 2, 4, 6, 8]
        assert list(ex.map(square, range(100), chunksize=7)) == [n * n for n in range(100)]
        failing = ex.submit(fail_on, 3, 3)
        with pytest.raises(ValueError, match="bad item 3"):
            failing.result(timeout=60)
        results = ex.map(fail_on, [1, 2, 0, 4])
        assert [next(results), next(results)] == [1, 2]
        with pytest.raises(ValueError, match="bad item 0"):
            next(results)


def test_a_failing_initializer_breaks_the_executor_on_every_backend(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        ex = shoal.Executor(2, backend=backend, initializer=broken_initializer)
        future = ex.submit(square, 3)
        with pytest.raises(cf.BrokenExecutor) as raised:
            future.result(timeout=60)
        err = raised.value
        assert isinstance(err, shoal.InitializerError)
        assert isinstance(err, cf.process.BrokenProcessPool)
        assert err.initializer == "broken_initializer"
        assert "broken_initializer() raised OSError: cannot open the model" in str(err)
        with pytest.raises(shoal.InitializerError):
            ex.submit(square, 4)
        ex.shutdown()
    assert any("Exception in initializer" in r.getMessage() for r in caplog.records)


def test_map_is_lazy_bounded_by_buffersize_and_stops_when_left() -> None:
    reads: list[int] = []

    def counted() -> Iterator[int]:
        for n in itertools.count():
            reads.append(n)
            yield n

    with shoal.Executor(2) as ex:
        results = ex.map(square, counted(), buffersize=4)
        time.sleep(0.3)
        assert len(reads) <= 4, reads
        assert [next(results) for _ in range(50)] == [n * n for n in range(50)]
        time.sleep(0.3)
        assert len(reads) <= 50 + 4, len(reads)
        results.close()  # leaving the loop: nothing more is started
        time.sleep(0.3)
        settled = len(reads)
        time.sleep(0.3)
        assert len(reads) == settled
        # Unbounded by default, but still lazy for an endless input.
        assert list(itertools.islice(ex.map(square, itertools.count()), 3)) == [0, 1, 4]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"buffersize": 0}, ValueError, "buffersize must be None or > 0"),
        ({"buffersize": 2.5}, TypeError, "buffersize must be an integer or None"),
        ({"chunksize": 0}, ValueError, "chunksize must be at least 1"),
    ],
)
def test_map_refuses_bad_sizes(kwargs: dict[str, object], error: type, message: str) -> None:
    with shoal.Executor(1, backend="thread") as ex, pytest.raises(error, match=message):
        ex.map(square, [1], **kwargs)  # type: ignore[arg-type]


def test_map_timeout_counts_from_the_call() -> None:
    with shoal.Executor(2) as ex:
        got: list[None] = []

        def read_all() -> None:
            for value in ex.map(time.sleep, [0, 0, 5], timeout=1):
                got.append(value)

        with pytest.raises(TimeoutError):
            read_all()
        assert got == [None, None]


def _mark_then_sleep(marker: str, seconds: float) -> None:
    Path(marker).touch()
    time.sleep(seconds)


def _kill_myself(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_a_dead_worker_fails_only_its_future(pool_start_method: str) -> None:
    with shoal.Executor(2, start_method=pool_start_method) as ex:
        futures = [ex.submit(_kill_myself, n) for n in range(8)]
        for n, future in enumerate(futures):
            if n == 3:
                with pytest.raises(shoal.WorkerLostError, match="SIGKILL"):
                    future.result(timeout=60)
            else:
                assert future.result(timeout=60) == n
        assert ex.submit(square, 9).result(timeout=60) == 81


def test_shutdown_cancels_what_has_not_started_and_refuses_new_work() -> None:
    ex = shoal.Executor(1)
    futures = [ex.submit(time.sleep, 0.05) for _ in range(40)]
    ex.shutdown(wait=True, cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    assert len(cancelled) > 20
    assert all(f.done() and f.exception() is None for f in futures if not f.cancelled())
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(square, 1)
    ex.shutdown()  # a second time does nothing


@pytest.mark.parametrize("value", [0, -1])
def test_max_workers_must_be_positive(value: int) -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        shoal.ProcessPoolExecutor(value)


def test_the_drop_in_names_take_the_standard_signatures() -> None:
    import multiprocessing

    seen: list[str] = []
    with shoal.ThreadPoolExecutor(None, "prefix", seen.append, ("ready",)) as ex:
        assert ex._max_workers == min(32, (os.cpu_count() or 1) + 4)
        assert ex.submit(threading.current_thread).result(timeout=10).name.startswith("prefix_")
    assert "ready" in seen
    fork = multiprocessing.get_context("fork")
    with shoal.ProcessPoolExecutor(2, fork, max_tasks_per_child=5) as ex:
        assert ex._max_workers == 2
        assert sum(ex.map(square, range(20))) == sum(n * n for n in range(20))
        assert ex.submit(worker_name).result(timeout=10).startswith("ForkProcess-")
    assert "InitializerError" in dir(shoal)
    assert "ProcessPoolExecutor" in dir(shoal)
    assert not KEEPS_ITS_WORKERS.get("process")


def test_a_program_whose_import_changed_from_concurrent_futures(
    tmp_path: Path, pool_start_method: str
) -> None:
    done = run_script(
        """
        import atexit
        import concurrent.futures as cf
        import sys
        import time
        from shoal import ProcessPoolExecutor

        class Doubler:
            def __init__(self, k): self.k = k
            def run(self, x): return x * self.k

        def make_adder(n):
            return lambda x: x + n

        def sleep_and_print(seconds, text):
            time.sleep(seconds)
            # One write: two pools print at once (print() makes two when unbuffered).
            sys.stdout.write(text + "\\n")
            sys.stdout.flush()

        ex = ProcessPoolExecutor(2, start_method=START)
        futures = [ex.submit(Doubler(2).run, n) for n in range(5)]
        print(sorted(f.result() for f in cf.as_completed(futures)))
        print(list(ex.map(make_adder(10), range(3))))
        ex.submit(sleep_and_print, 0.5, "finished before exit")

        other = ProcessPoolExecutor(1, start_method=START)
        other.submit(sleep_and_print, 0.5, "finished after shutdown(wait=False)")
        other.shutdown(wait=False)

        @atexit.register
        def too_late():
            try:
                ex.submit(abs, -1)
            except RuntimeError as exc:
                print("at exit:", exc, flush=True)
        """,
        tmp_path,
        pool_start_method,
    )
    lines = done.stdout.splitlines()
    assert lines[:2] == ["[0, 2, 4, 6, 8]", "[10, 11, 12]"]
    assert "finished before exit" in lines
    assert "finished after shutdown(wait=False)" in lines
    assert "at exit: cannot schedule new futures after interpreter shutdown" in lines
    assert done.stderr == ""


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_shutdown_stops_reading_a_lazy_map_left_unread(backend: str) -> None:
    # The standard map submits its whole input at once; this one reads it as results
    # are taken, so what was not read yet was never submitted: shutdown does not read it.
    with shoal.Executor(2, backend=backend) as ex:
        results = ex.map(square, itertools.count(), buffersize=8)
        assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    rest = list(results)  # what was read still arrives, then the iterator ends
    assert rest == [n * n for n in range(5, 5 + len(rest))]
    assert len(rest) <= 8


_UNREAD_MAP = """
import sys
from {cf} import ProcessPoolExecutor

# One write each: workers print at once, and print() makes two when unbuffered (-u).
def init():
    sys.stdout.write("init\\n")
    sys.stdout.flush()

def task(n):
    sys.stdout.write(f"task {{n}}\\n")
    sys.stdout.flush()

if __name__ == "__main__":
    with ProcessPoolExecutor(2, initializer=init) as ex:
        _ = ex.map(task, range(6){extra})  # never read: the calls still run
"""


@pytest.mark.parametrize("buffersize", [None, 2])
def test_a_map_nobody_reads_still_runs_as_concurrent_futures_runs_it(
    tmp_path: Path, buffersize: int | None
) -> None:
    if buffersize is not None and sys.version_info < (3, 14):
        pytest.skip("concurrent.futures' map takes buffersize from Python 3.14")
    extra = "" if buffersize is None else f", buffersize={buffersize}"
    seen = []
    for module in ("concurrent.futures", "shoal"):
        done = run_script(_UNREAD_MAP.format(cf=module, extra=extra), tmp_path, "unused")
        seen.append(sorted(line for line in done.stdout.splitlines() if line.startswith("task")))
    theirs, ours = seen
    assert ours == theirs
    assert len(ours) == (6 if buffersize is None else buffersize)


@pytest.mark.parametrize("end", ["terminate_workers", "kill_workers"])
def test_ending_the_workers_breaks_running_futures_and_shuts_down(end: str, tmp_path: Path) -> None:
    # Python 3.14's ProcessPoolExecutor.terminate_workers() and kill_workers().
    ex = shoal.ProcessPoolExecutor(1)
    marker = tmp_path / "started"
    # An hour: were the worker waited for rather than ended, the test would hang until the
    # suite's timeout fails it.
    running = ex.submit(_mark_then_sleep, str(marker), 3600)
    # (The file, not running(): the future says running() only once asked to cancel.)
    wait_for(marker.exists, "the task to start")
    getattr(ex, end)()
    assert isinstance(running.exception(timeout=30), cf.process.BrokenProcessPool)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, 1)
