"""shoal.Pool: multiprocessing.Pool's documented behaviour, case by case, on every backend."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pool_workers import (
    KEEPS_ITS_WORKERS,
    Scaler,
    add,
    broken_initializer,
    divide_by,
    fail_on,
    nap,
    raise_from,
    recall,
    remember,
    square,
    wait_for_file,
)
from waiting import wait_for

import shoal
import shoal.dummy
from shoal.pool import RemoteTraceback


@pytest.fixture
def pool(backend: str) -> Iterator[shoal.Pool]:
    """A two-worker pool, terminated after the test."""
    with shoal.Pool(2, backend=backend) as p:
        yield p


def _closure_task(offset: int) -> Callable[[int], int]:
    def shifted(x: int) -> int:
        return x + offset

    return shifted


def _callable_kinds() -> list[tuple[str, Callable[[int], int]]]:
    def nested(x: int) -> int:
        def inner(y: int) -> int:
            return y * 2

        return inner(x)

    return [
        ("function", square),
        ("lambda", lambda x: x - 1),
        ("closure", _closure_task(10)),
        ("nested function", nested),
        ("bound method", Scaler(5).scale),
        ("staticmethod", Scaler.negate),
        ("classmethod", Scaler.scale_by_class),
        ("functools.partial", functools.partial(add, 100)),
        ("callable instance", Scaler(7)),
        ("builtin", abs),
    ]


@pytest.mark.parametrize(("kind", "fn"), _callable_kinds(), ids=[k for k, _ in _callable_kinds()])
def test_every_callable_kind(pool: shoal.Pool, kind: str, fn: Callable[[int], int]) -> None:
    xs = list(range(-3, 7))
    expected = [fn(x) for x in xs]
    assert pool.map(fn, xs) == expected
    assert list(pool.imap(fn, xs)) == expected
    assert sorted(pool.imap_unordered(fn, xs)) == sorted(expected)
    assert pool.apply(fn, (4,)) == fn(4)
    assert pool.submit(fn, 4).result(timeout=30) == fn(4)


@pytest.mark.parametrize("chunksize", [None, 1, 3, 1000])
@pytest.mark.parametrize("n", [0, 1, 7, 500])
def test_map_family_keeps_order(
    pool: shoal.Pool, backend: str, n: int, chunksize: int | None
) -> None:
    if backend.endswith("-session") and chunksize == 1:
        n = min(n, 100)  # (a cluster runs a few hundred tasks a second)
    xs = list(range(n))
    squares = [x * x for x in xs]
    assert pool.map(square, xs, chunksize) == squares
    assert pool.map(square, iter(xs), chunksize) == squares
    assert pool.map_async(square, xs, chunksize).get(30) == squares
    assert list(pool.imap(square, xs, chunksize)) == squares
    assert sorted(pool.imap_unordered(square, xs, chunksize)) == squares
    pairs = [(x, 1) for x in xs]
    assert pool.starmap(add, pairs, chunksize) == [x + 1 for x in xs]
    assert pool.starmap_async(add, pairs, chunksize).get(30) == [x + 1 for x in xs]


def test_apply_passes_args_and_kwds(pool: shoal.Pool) -> None:
    assert pool.apply(fail_on, (5,), {"bad": 7}) == 5
    assert pool.apply(sorted, ([3, 1, 2],), {"reverse": True}) == [3, 2, 1]
    assert pool.apply_async(int, ("ff",), {"base": 16}).get(30) == 255


def test_async_result_semantics(pool: shoal.Pool, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    result = pool.apply_async(wait_for_file, (str(gate),))
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.01)
    assert shoal.TimeoutError is multiprocessing.TimeoutError
    result.wait(0.01)
    assert not result.ready()
    gate.touch()
    result.wait(30)
    assert result.ready()
    assert result.successful()
    assert result.get() is True
    assert result.get(0) is True


def test_a_failed_task_reraises_with_the_worker_traceback_as_cause(pool: shoal.Pool) -> None:
    calls: list[Callable[[], object]] = [
        lambda: pool.map(divide_by, [1, 0, 2]),
        lambda: pool.apply(divide_by, (0,)),
        lambda: pool.apply_async(divide_by, (0,)).get(30),
        lambda: pool.submit(divide_by, 0).result(30),
        lambda: list(pool.imap(divide_by, [0])),
        lambda: list(pool.imap_unordered(divide_by, [0])),
        lambda: pool.starmap(divide_by, [(0,)]),
    ]
    for call in calls:
        with pytest.raises(ZeroDivisionError) as info:
            call()
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "divide_by" in cause.tb
        assert "ZeroDivisionError" in cause.tb
        assert "divide_by" in str(cause)


def test_a_cause_set_by_the_task_is_kept(pool: shoal.Pool) -> None:
    with pytest.raises(RuntimeError, match="wrapped") as info:
        pool.apply(raise_from, (1,))
    assert isinstance(info.value.__cause__, KeyError)


def test_thread_backend_reraises_the_original_exception_object() -> None:
    error = ValueError("mine")

    def throw() -> None:
        raise error

    with shoal.Pool(1, backend="thread") as pool, pytest.raises(ValueError, match="mine") as info:
        pool.apply(throw)
    assert info.value is error
    frames = [frame.name for frame in __import__("traceback").extract_tb(error.__traceback__)]
    assert "throw" in frames


def test_map_fails_fast_and_stops_handing_out_work() -> None:
    ran: list[int] = []

    def task(x: int) -> int:
        ran.append(x)
        return fail_on(x, bad=0)

    with shoal.Pool(1, backend="thread") as pool:
        with pytest.raises(ValueError, match="bad item 0"):
            pool.map(task, range(10_000), chunksize=1)
        pool.close()
        pool.join()
    assert len(ran) < 100


@pytest.mark.parametrize("chunksize", [None, 1, 4])
def test_imap_raises_at_the_failed_position_and_goes_on(
    pool: shoal.Pool, chunksize: int | None
) -> None:
    it = pool.imap(fail_on, [3, 2, 0, 1], chunksize)
    assert [next(it), next(it)] == [3, 2]
    with pytest.raises(ValueError, match="bad item 0"):
        next(it)
    assert list(it) == [1]
    unordered = pool.imap_unordered(fail_on, [3, 0, 1], chunksize)
    got, errors = [], 0
    while True:
        try:
            got.append(next(unordered))
        except StopIteration:
            break
        except ValueError:
            errors += 1
    assert sorted(got) == [1, 3]
    assert errors == 1


def test_imap_next_takes_a_timeout(pool: shoal.Pool, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    it = pool.imap(lambda x: wait_for_file(gate, x), [1])
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.01)
    Path(gate).touch()
    assert it.next(timeout=30) == 1
    with pytest.raises(StopIteration):
        it.next(timeout=30)


def test_callbacks_run_before_get_returns(pool: shoal.Pool) -> None:
    seen: list[object] = []
    errors: list[BaseException] = []
    assert pool.apply_async(square, (3,), callback=seen.append).get(30) == 9
    assert seen == [9]
    assert pool.map_async(square, [1, 2], callback=seen.append).get(30) == [1, 4]
    assert seen == [9, [1, 4]]
    assert pool.starmap_async(add, [(1, 2)], callback=seen.append).get(30) == [3]
    result = pool.apply_async(divide_by, (0,), callback=seen.append, error_callback=errors.append)
    result.wait(30)
    assert not result.successful()
    assert len(errors) == 1
    assert isinstance(errors[0], ZeroDivisionError)
    pool.map_async(divide_by, [0], error_callback=errors.append).wait(30)
    assert len(errors) == 2
    assert seen[-1] == [3]


def test_empty_map_async_calls_back(pool: shoal.Pool) -> None:
    seen: list[object] = []
    assert pool.map_async(square, [], callback=seen.append).get(1) == []
    assert seen == [[]]


def test_a_raising_callback_is_reported_and_delivery_goes_on(
    pool: shoal.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_value))

    def bad_callback(_: object) -> None:
        raise RuntimeError("callback broke")

    result = pool.apply_async(square, (2,), callback=bad_callback)
    assert result.get(30) == 4
    assert len(reported) == 1
    assert "callback broke" in str(reported[0])
    assert pool.map(square, [1, 2]) == [1, 4]


def test_submit_returns_a_future(pool: shoal.Pool) -> None:
    assert pool.submit(add, 1, b=2).result(30) == 3
    failed = pool.submit(divide_by, 0)
    assert isinstance(failed.exception(30), ZeroDivisionError)


def test_a_future_cancelled_before_it_starts_is_skipped() -> None:
    gate = threading.Event()
    ran: list[int] = []
    with shoal.Pool(1, backend="thread") as pool:
        first = pool.submit(gate.wait, 30)
        # Fill the worker's queue so the next submit waits in the pool.
        fillers = [pool.submit(ran.append, i) for i in range(4)]
        last = pool.submit(ran.append, 99)
        # One chunk runs and one waits per worker: `last` is still in the pool's hands.
        assert last.cancel()
        gate.set()
        assert first.result(30) is True
        for f in fillers:
            f.result(30)
        assert last.cancelled()
        assert 99 not in ran


@pytest.mark.parametrize("processes", [0, -1])
def test_processes_must_be_positive(backend: str, processes: int) -> None:
    with pytest.raises(ValueError, match="Number of processes must be at least 1"):
        shoal.Pool(processes, backend=backend)


def test_invalid_arguments(pool: shoal.Pool, backend: str) -> None:
    for bad in (0, -2):
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(square, [1], chunksize=bad)
        with pytest.raises(ValueError, match="chunksize"):
            pool.imap(square, [1], chunksize=bad)
        with pytest.raises(ValueError, match="chunksize"):
            pool.imap_unordered(square, [1], chunksize=bad)
        with pytest.raises(ValueError, match="chunksize"):
            pool.starmap(add, [(1, 2)], chunksize=bad)
        with pytest.raises(ValueError, match="chunksize"):
            shoal.Pool(1, backend=backend, chunksize=bad)
        with pytest.raises(ValueError, match="maxtasksperchild"):
            shoal.Pool(1, maxtasksperchild=bad, backend=backend)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        shoal.Pool(1, initializer=42, backend=backend)  # type: ignore[arg-type]  # on purpose
    with pytest.raises(TypeError, match="not callable"):
        pool.apply(42)  # type: ignore[arg-type]  # on purpose
    with pytest.raises(ValueError, match=r"unknown pool backend 'nope'.*'thread'"):
        shoal.Pool(1, backend="nope")
    with pytest.raises(NotImplementedError, match="cannot be passed"):
        pickle.dumps(pool)


def test_initializer_runs_once_in_each_worker(backend: str) -> None:
    with shoal.Pool(3, remember, ("cfg",), backend=backend) as pool:
        seen = pool.map(recall, range(60), chunksize=1)
    assert {value for value, _ in seen} == {"cfg"}
    assert 1 <= len({token for _, token in seen}) <= 3


def test_maxtasksperchild_replaces_the_worker(backend: str) -> None:
    if backend in KEEPS_ITS_WORKERS:
        pytest.skip(KEEPS_ITS_WORKERS[backend])
    with shoal.Pool(1, remember, (1,), maxtasksperchild=2, backend=backend) as pool:
        tokens = [token for _, token in pool.map(recall, range(6), chunksize=1)]
    if backend == "ray-session":
        # Ray ends a worker process after max_calls chunks, but may hand the next chunk
        # to another idle worker before that: no worker runs more than 2, and they change.
        assert len(set(tokens)) >= 3
        assert all(tokens.count(t) <= 2 for t in tokens)
        return
    assert len(set(tokens)) == 3
    assert all(tokens.count(t) == 2 for t in tokens)


def test_a_failing_initializer_fails_the_tasks() -> None:
    with shoal.Pool(2, broken_initializer, backend="thread") as pool:
        with pytest.raises(OSError, match="cannot open the model"):
            pool.map(square, range(4))
        with pytest.raises(OSError, match="cannot open the model"):
            pool.apply(square, (1,))


def test_shoal_map_and_cpu_count(backend: str) -> None:
    assert shoal.map(square, range(5), processes=2, backend=backend) == [0, 1, 4, 9, 16]
    assert shoal.map(square, [], backend=backend, chunksize=2) == []
    assert shoal.map(square, range(3)) == [0, 1, 4]
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    assert shoal.cpu_count() == (expected or os.cpu_count() or 1)
    with shoal.Pool(backend=backend) as pool:
        assert repr(pool).endswith(f"processes={shoal.cpu_count()}>")


def test_dummy_pool_is_the_thread_pool() -> None:
    shared = {"n": 1}
    with shoal.dummy.Pool(2) as pool:
        assert isinstance(pool, shoal.Pool)
        assert "backend=thread" in repr(pool)
        assert pool.apply(lambda: shared) is shared


def test_callbacks_run_on_a_pool_thread(pool: shoal.Pool) -> None:
    threads: list[threading.Thread] = []
    pool.apply_async(square, (2,), callback=lambda _: threads.append(threading.current_thread()))
    pool.map_async(square, [1], callback=lambda _: threads.append(threading.current_thread()))
    pool.close()
    pool.join()
    assert len(threads) == 2
    assert threading.current_thread() not in threads


def test_apply_is_not_starved_by_a_busy_infinite_imap(pool: shoal.Pool) -> None:
    stop = threading.Event()

    def drain() -> None:
        for _ in pool.imap(nap, itertools.repeat(0.001)):
            if stop.is_set():
                return

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        assert [pool.apply(square, (i,)) for i in range(5)] == [0, 1, 4, 9, 16]
        assert pool.submit(add, 2, 3).result(30) == 5
    finally:
        stop.set()
        reader.join(30)


def test_the_cache_holds_the_calls_not_finished(pool: shoal.Pool) -> None:
    # multiprocessing's Pool._cache: programs wait `while pool._cache:` or count it.
    slow = [pool.apply_async(nap, (0.3,)) for _ in range(3)]
    mapped = pool.map_async(nap, [0.1, 0.1], chunksize=1)
    future = pool.submit(nap, 0.2)
    held = {id(result) for result in [*slow, mapped, future]}
    assert held <= set(pool._cache), pool._cache
    assert {id(v) for v in pool._cache.values()} == set(pool._cache)
    wait_for(lambda: pool._cache == {}, "every call answered to leave pool._cache")
    assert all(r.ready() for r in slow)
    assert mapped.ready()
    assert future.done()
