"""``Pool(worker_exit=fn)``: ``fn()`` runs in each worker as it leaves (close,
``maxtasksperchild``), with the worker's state still there, and ``pool.exit_results()``
collects what it returned; its errors reach the caller; backends that cannot run it
refuse it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pool_workers import BACKENDS, OWN_WORKERS, broken_initializer, die, square

import shoal
from scripts import run_script
from shoal.pool import RemoteTraceback


def _count(x: int) -> int:
    state = shoal.current_worker().state
    state["done"] = state.get("done", 0) + 1
    return x


def _report() -> tuple[int, int]:
    worker = shoal.current_worker()
    return worker.index, worker.state.get("done", 0)


def _fail() -> None:
    raise KeyError("the model could not be saved")


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_each_worker_reports_as_it_leaves(backend: str) -> None:
    with shoal.Pool(2, worker_exit=_report, backend=backend) as pool:
        assert pool.map(_count, range(20), chunksize=1) == list(range(20))
        assert pool.exit_results() == []  # nobody has left yet
        pool.close()
        pool.join()
        reports = pool.exit_results()
    assert sorted(index for index, _ in reports) == [0, 1]
    assert sum(done for _, done in reports) == 20


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_a_worker_retired_by_maxtasksperchild_reports_too(backend: str) -> None:
    with shoal.Pool(2, maxtasksperchild=3, worker_exit=_report, backend=backend) as pool:
        pool.map(_count, range(10), chunksize=1)
        pool.close()
        pool.join()
        reports = pool.exit_results()
    assert sum(done for _, done in reports) == 10
    assert len(reports) >= 4  # ten chunks, three per worker life
    assert all(done <= 3 for _, done in reports)


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_an_error_in_worker_exit_reaches_the_caller(backend: str) -> None:
    with shoal.Pool(1, worker_exit=_fail, backend=backend) as pool:
        pool.close()
        pool.join()
        with pytest.raises(KeyError, match="could not be saved") as caught:
            pool.exit_results()
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "_fail" in str(caught.value.__cause__)


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_a_worker_whose_initializer_failed_does_not_run_it(backend: str) -> None:
    with shoal.Pool(
        1, initializer=broken_initializer, worker_exit=_report, backend=backend
    ) as pool:
        with pytest.raises(OSError, match="cannot open the model"):
            pool.apply(square, (2,))
        pool.close()
        pool.join()
        assert pool.exit_results() == []


def test_a_killed_worker_gives_nothing_and_its_replacement_reports() -> None:
    with shoal.Pool(1, worker_exit=_report) as pool:
        with pytest.raises(shoal.WorkerLostError):
            pool.apply(die)
        assert pool.apply(_count, (1,)) == 1
        pool.close()
        pool.join()
        assert pool.exit_results() == [(0, 1)]


def test_terminate_kills_process_workers_before_they_can_report() -> None:
    pool = shoal.Pool(2, worker_exit=_report)
    pool.map(_count, range(4))
    pool.terminate()
    pool.join()
    assert pool.exit_results() == []


def test_threads_report_even_after_terminate() -> None:
    pool = shoal.Pool(2, worker_exit=_report, backend="thread")
    pool.map(_count, range(4))
    pool.terminate()
    pool.join()
    assert sorted(index for index, _ in pool.exit_results()) == [0, 1]


def test_a_value_that_cannot_be_sent_fails_saying_so() -> None:
    with shoal.Pool(1, worker_exit=threading.Lock) as pool:
        pool.close()
        pool.join()
        with pytest.raises(shoal.ShoalError, match="worker_exit returned a value that cannot"):
            pool.exit_results()


def test_bad_worker_exit_arguments_fail_at_once() -> None:
    with pytest.raises(TypeError, match="worker_exit must be a callable, not int"):
        shoal.Pool(1, worker_exit=3)  # type: ignore[arg-type]
    lock = threading.Lock()
    with pytest.raises(shoal.PicklingError):
        shoal.Pool(1, worker_exit=lambda: lock)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in OWN_WORKERS])
def test_backends_that_do_not_own_their_workers_refuse_it(backend: str) -> None:
    with pytest.raises(ValueError, match="worker_exit"):
        shoal.Pool(1, worker_exit=_report, backend=backend)


def test_a_script_collects_what_its_workers_counted(tmp_path: Path, pool_start_method: str) -> None:
    done = run_script(
        """
        import shoal

        def load():
            shoal.current_worker().state["seen"] = []

        def work(x):
            shoal.current_worker().state["seen"].append(x)
            return x * x

        def report():
            return sorted(shoal.current_worker().state["seen"])

        with shoal.Pool(2, initializer=load, worker_exit=report, start_method=START) as pool:
            print(sum(pool.map(work, range(30), chunksize=1)))
            pool.close()
            pool.join()
            seen = pool.exit_results()
        print(len(seen), sorted(x for part in seen for x in part) == list(range(30)))
        pool = shoal.Pool(1, worker_exit=lambda: "bye", start_method=START)
        pool.close()
        pool.join()
        print(pool.exit_results())
        """,
        tmp_path,
        pool_start_method,
    )
    assert done.stdout.splitlines() == [str(sum(x * x for x in range(30))), "2 True", "['bye']"]


def test_a_script_on_the_thread_twin_counts_reports_and_leaves(tmp_path: Path) -> None:
    # The thread backend as a script uses it: functions of __main__, a lambda, no guard.
    done = run_script(
        """
        import shoal
        from shoal.dummy import Pool

        def load():
            shoal.current_worker().state["seen"] = 0

        def work(x):
            shoal.current_worker().state["seen"] += 1
            return x * x

        def report():
            return shoal.current_worker().state["seen"]

        counts = []
        with Pool(2, initializer=load, worker_exit=report) as pool:
            squares = pool.map(work, range(40), chunksize=4,
                               progress=lambda done, total: counts.append((done, total)))
            print(sum(squares))
            stats = pool.stats()
            print(stats.tasks_done, stats.chunks_done, sorted(w.index for w in stats.workers))
            print(sum(w.tasks for w in stats.workers), stats.tasks_failed, stats.backend)
            pool.close()
            pool.join()
            left = pool.exit_results()
        print(sum(left), len(left))
        print(counts[-1], counts == sorted(counts))
        """,
        tmp_path,
        "thread",
    )
    assert done.stdout.splitlines() == [
        str(sum(x * x for x in range(40))),
        "40 10 [0, 1]",
        "40 0 thread",
        "40 2",
        "(40, 40) True",
    ]
