"""``Pool.stats()``: figures that agree with the work done, on every backend; worker lives
(start-up, restarts and why) on the backends that own their workers; the slowest tasks
with their arguments; a script printing its pool's table under every start method."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import programs
import pytest
from pool_workers import BACKENDS, KEEPS_ITS_WORKERS, OWN_WORKERS, die, fail_on, nap, square
from waiting import wait_for

import shoal
from scripts import run_script
from shoal._wire.labels import LABEL_AFTER
from shoal.pool._stats import SLOWEST


def test_the_counts_agree_with_the_work_done(backend: str) -> None:
    with shoal.Pool(2, backend=backend) as pool:
        assert pool.map(square, range(100), chunksize=7) == [x * x for x in range(100)]
        # Three of these fail (each is a chunk of its own).
        calls = [pool.apply_async(fail_on, (x,)) for x in (1, 0, 2, 0, 3, 0)]
        for call in calls:
            call.wait(60)
        assert [call.successful() for call in calls] == [True, False] * 3
        stats = pool.stats()
    assert stats.backend == backend
    assert stats.tasks_done == 106
    assert stats.chunks_done == math.ceil(100 / 7) + 6
    assert stats.tasks_failed == 3
    assert stats.in_flight == 0
    assert stats.chunk_size == 1
    assert 0 < stats.tasks_per_second <= stats.tasks_done / stats.uptime * 1.0001
    if backend == "docs-example":
        assert stats.workers == ()  # it reports no workers: totals only
    else:
        assert sum(w.tasks for w in stats.workers) == 106
        assert sum(w.chunks for w in stats.workers) == stats.chunks_done
        assert all(w.busy >= 0 for w in stats.workers)
    if backend in OWN_WORKERS:
        assert [w.index for w in stats.workers] == [0, 1]
        assert all(w.restart_count == 0 and w.alive for w in stats.workers)
    elif backend != "docs-example":
        # A cluster's workers, known by the pids that answered.
        assert all(w.index is None and w.pid for w in stats.workers)
    assert (stats.arena is not None) == (backend == "process")
    assert f"{stats.tasks_done} tasks (3 failed), " in str(stats)


def test_the_slowest_tasks_are_named_by_their_arguments(backend: str) -> None:
    with shoal.Pool(2, backend=backend) as pool:
        results = [pool.apply_async(nap, (s,)) for s in (0.0, 0.3, 0.0, 0.15, 0.0, 0.0, 0.0)]
        assert [r.get(60) for r in results] == [0.0, 0.3, 0.0, 0.15, 0.0, 0.0, 0.0]
        stats = pool.stats()
    assert len(stats.slowest) == SLOWEST
    first, second = stats.slowest[:2]
    assert (first.arguments, first.tasks) == ("0.3", 1)
    assert (second.arguments, second.tasks) == ("0.15", 1)
    assert first.seconds >= 0.3 > second.seconds >= 0.15
    seconds = [s.seconds for s in stats.slowest]
    assert seconds == sorted(seconds, reverse=True)
    # Only chunks that ran LABEL_AFTER or longer are described: no repr is paid for the
    # tiny ones (which a loaded machine may stretch past it: the rule, not the timing).
    for slow in stats.slowest:
        assert (slow.arguments is not None) == (slow.seconds >= LABEL_AFTER), slow
    if backend in OWN_WORKERS:
        busiest = {w.index: w.busy for w in stats.workers}[first.worker]
        assert busiest >= 0.3


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in KEEPS_ITS_WORKERS])
def test_restarts_for_maxtasksperchild_are_counted(backend: str) -> None:
    with shoal.Pool(2, maxtasksperchild=2, backend=backend) as pool:
        pool.map(square, range(12), chunksize=1)
        pool.close()
        pool.join()
        stats = pool.stats()
    assert stats.tasks_done == 12
    if backend not in OWN_WORKERS:
        return  # a Ray worker that leaves is Ray's to replace
    assert sum(w.restarts.get("maxtasksperchild", 0) for w in stats.workers) >= 4
    assert all(set(w.restarts) <= {"maxtasksperchild"} for w in stats.workers)
    assert not any(w.alive for w in stats.workers)  # after join: every worker ended


def test_a_killed_worker_and_a_timed_out_task_are_told_apart() -> None:
    with shoal.Pool(2) as pool:
        pids = {w.pid for w in pool.stats().workers}
        with pytest.raises(shoal.WorkerLostError):
            pool.apply(die)
        with pytest.raises(shoal.TaskTimeoutError):
            pool.apply(nap, (30,), task_timeout=0.5)
        wait_for(lambda: sum(w.restart_count for w in pool.stats().workers) == 2, "two restarts")
        stats = pool.stats()
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
    reasons: dict[str, int] = {}
    for w in stats.workers:
        for why, n in w.restarts.items():
            reasons[why] = reasons.get(why, 0) + n
    assert reasons == {"died": 1, "timeout": 1}
    assert stats.tasks_failed == 2
    # The lost tasks count for the workers that died under them.
    assert sum(w.tasks for w in stats.workers) == stats.tasks_done
    assert len(pids - {w.pid for w in stats.workers}) >= 1  # (one index may restart twice)


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_busy_and_idle_add_up_to_the_workers_lives(backend: str) -> None:
    started = time.monotonic()
    with shoal.Pool(2, backend=backend) as pool:
        pool.map(nap, [0.2, 0.2], chunksize=1)
        time.sleep(0.3)
        stats = pool.stats()
    lived = time.monotonic() - started
    for w in stats.workers:
        assert w.busy >= 0.2
        assert w.idle is not None
        assert w.idle >= 0.25
        assert w.busy + w.idle <= lived
        assert w.startup is not None
        assert 0 <= w.startup < lived


def test_the_tally_can_be_left_out() -> None:
    done = programs.run(
        [
            sys.executable,
            "-c",
            "import shoal\n"
            "with shoal.Pool(2) as pool:\n"
            "    pool.map(abs, range(10))\n"
            "    s = pool.stats()\n"
            "print(s.tasks_done, len(s.workers), s.arena is not None)\n",
        ],
        timeout=60,
        env={**os.environ, "SHOAL_STATS": "0"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 2 True\n"


def test_a_script_prints_its_pools_table(tmp_path: Path, pool_start_method: str) -> None:
    done = run_script(
        """
        import time
        import shoal

        def load():
            time.sleep(0.05)

        def work(x):
            if x == 5:
                time.sleep(0.2)
            return x

        with shoal.Pool(2, initializer=load, start_method=START) as pool:
            pool.map(work, range(10), chunksize=1)
            pool.map(lambda x: -x, range(10))
            stats = pool.stats()
        print(stats)
        print(stats.tasks_done, stats.slowest[0].arguments)
        print(all(w.startup >= 0.05 for w in stats.workers))
        """,
        tmp_path,
        pool_start_method,
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith("process pool: 20 tasks, ")
    assert lines[1].split() == [
        *("worker", "pid", "tasks", "chunks", "busy", "idle", "start-up", "restarts")
    ]
    assert lines[2].split()[0] == "0"
    assert lines[3].split()[0] == "1"
    assert lines[4].startswith("slowest: ")
    assert "(1 task: 5, worker " in lines[4]
    assert lines[-2:] == ["20 5", "True"]


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_map_cuts_its_input_as_multiprocessing_does(backend: str) -> None:
    # multiprocessing.Pool(2).map over 1001 items: chunksize ceil(1001 / 8) = 126, so 8
    # chunks (7 of 126 and one of 119); over 1000: 125, so 8 again; over 7: 1, so 7.
    for length, chunks in ((1001, 8), (1000, 8), (7, 7)):
        with shoal.Pool(2, backend=backend) as pool:
            assert pool.map(square, range(length)) == [x * x for x in range(length)]
            stats = pool.stats()
        assert (stats.tasks_done, stats.chunks_done) == (length, chunks), length
