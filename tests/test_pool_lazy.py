"""imap's laziness and chunk sizing: infinite inputs, bounded read-ahead, flat memory,
results that stream, and the chunk-size policies."""

from __future__ import annotations

import itertools
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from pool_workers import OWN_WORKERS, nap, square

import shoal
from shoal.pool._chunks import MAX_ADAPTIVE, TARGET_SECONDS, ChunkSizer, map_chunksize
from shoal.pool._jobs import READ_AHEAD


class Counted:
    """An infinite input that counts how far it has been read."""

    def __init__(self) -> None:
        self.produced = 0

    def __iter__(self) -> Iterator[int]:
        for i in itertools.count():
            self.produced = i + 1
            yield i


def _read_ahead_bound(pool: shoal.Pool, chunksize: int | None) -> int:
    """The most items imap may read past what its consumer took: its window of
    ``READ_AHEAD`` chunks per worker, plus the chunk being read when the window filled,
    each at most the largest chunk. (Not the backend's in-flight bound, which for the
    process backend is 1 << 20 chunks per worker and could never be reached here.)"""
    largest = chunksize or MAX_ADAPTIVE
    return (READ_AHEAD * pool._core.workers + 1) * largest


@pytest.mark.parametrize("ordered", [True, False], ids=["imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [None, 1, 5])
def test_an_infinite_input_is_read_lazily(
    backend: str, ordered: bool, chunksize: int | None
) -> None:
    source = Counted()
    with shoal.Pool(2, backend=backend) as pool:
        method = pool.imap if ordered else pool.imap_unordered
        results = method(square, iter(source), chunksize)
        bound = _read_ahead_bound(pool, chunksize)
        # (A cluster runs a few hundred tasks a second: fewer, still many times the bound.)
        n = 600 if backend.endswith("-session") else 3000
        for consumed in range(1, n + 1):
            value = next(results)
            if ordered:
                assert value == (consumed - 1) ** 2
            assert source.produced - consumed <= bound
        # A consumer that stops reading stops the input too.
        stopped_at = source.produced
        pool.apply(nap, (0.05,))
        assert source.produced - n <= bound
        assert source.produced <= stopped_at + bound


def test_memory_stays_flat_over_an_infinite_input(backend: str) -> None:
    if backend == "dask-session":
        pytest.skip(
            "the session's Dask scheduler runs in this process, and its bounded logs "
            "(transitions, task stream) fill up during the test"
        )
    source = Counted()
    with shoal.Pool(2, backend=backend) as pool:
        results = pool.imap(square, iter(source))
        tracemalloc.start()
        try:
            for _ in range(20_000):
                next(results)
            warm, _ = tracemalloc.get_traced_memory()
            for _ in range(100_000):
                next(results)
            later, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # 100,000 more results held would take several MB; a bounded pipeline holds a few
    # chunks whatever the count.
    assert later - warm < 1_000_000, (warm, later)


def test_results_stream_before_the_input_ends(backend: str) -> None:
    more = threading.Event()

    def slow_source() -> Iterator[float]:
        yield from [0.01, 0.01, 0.01]
        more.wait(30)
        yield 0.0

    with shoal.Pool(2, backend=backend) as pool:
        results = pool.imap(nap, slow_source())
        # Slow tasks keep adaptive chunks at one task, so each result comes out while the
        # input is still blocked.
        assert [results.next(timeout=30) for _ in range(3)] == [0.01, 0.01, 0.01]
        more.set()
        assert list(results) == [0.0]


@pytest.mark.parametrize("ordered", [True, False], ids=["imap", "imap_unordered"])
def test_an_input_that_raises_ends_the_stream_with_its_error(backend: str, ordered: bool) -> None:
    def source() -> Iterator[int]:
        yield from range(3)
        raise LookupError("input broke")

    with shoal.Pool(2, backend=backend) as pool:
        method = pool.imap if ordered else pool.imap_unordered
        results = method(square, source(), 1)
        got = [next(results) for _ in range(3)]
        assert sorted(got) == [0, 1, 4]
        with pytest.raises(LookupError, match="input broke"):
            next(results)
        with pytest.raises(StopIteration):
            next(results)


@pytest.mark.parametrize(("chunksize", "before"), [(None, 7), (1, 7), (4, 4), (2, 6)])
def test_with_a_chunksize_the_chunk_the_input_failed_in_is_dropped(
    backend: str, chunksize: int | None, before: int
) -> None:
    """As multiprocessing does; adaptive chunks lose nothing (multiprocessing's imap
    default, chunksize 1, loses nothing either)."""

    def source() -> Iterator[int]:
        yield from range(7)
        raise LookupError("input broke")

    with shoal.Pool(2, backend=backend) as pool:
        results = pool.imap(square, source(), chunksize)
        assert [next(results) for _ in range(before)] == [x * x for x in range(before)]
        with pytest.raises(LookupError, match="input broke"):
            next(results)
        with pytest.raises(StopIteration):
            next(results)


def test_map_reads_its_input_in_the_caller(backend: str) -> None:
    def source() -> Iterator[int]:
        yield 1
        raise LookupError("input broke")

    with shoal.Pool(2, backend=backend) as pool, pytest.raises(LookupError, match="input broke"):
        pool.map(square, source())


def test_pool_default_chunksize_applies(backend: str) -> None:
    with shoal.Pool(2, backend=backend, chunksize=3) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert list(pool.imap(square, range(10))) == [x * x for x in range(10)]


def test_map_chunksize_is_multiprocessing_formula() -> None:
    for length in (0, 1, 15, 16, 17, 1000, 10**6):
        for workers in (1, 2, 3, 8):
            chunksize, extra = divmod(length, workers * 4)
            expected = chunksize + 1 if extra else chunksize
            assert map_chunksize(length, workers) == max(expected, 1)


def test_adaptive_chunks_grow_for_tiny_tasks_up_to_the_cap() -> None:
    sizer = ChunkSizer(None)
    sizes = []
    for _ in range(30):
        size = sizer.next_size()
        sizes.append(size)
        sizer.observe(size, size * 1e-7)
    assert sizes[:4] == [1, 2, 4, 8]  # at most doubling per step
    assert sizes[-1] == MAX_ADAPTIVE


def test_adaptive_chunks_stay_small_for_slow_tasks_and_shrink_at_once() -> None:
    sizer = ChunkSizer(None)
    for _ in range(5):
        sizer.observe(1, TARGET_SECONDS * 4)
    assert sizer.next_size() == 1
    fast = ChunkSizer(None)
    for _ in range(20):
        fast.observe(fast.next_size(), fast.next_size() * 1e-7)
    assert fast.next_size() == MAX_ADAPTIVE
    for _ in range(10):
        fast.observe(fast.next_size(), fast.next_size() * TARGET_SECONDS)
    assert fast.next_size() == 1


def test_a_fixed_chunksize_never_changes() -> None:
    sizer = ChunkSizer(7)
    sizer.observe(7, 100.0)
    sizer.observe(7, 1e-9)
    assert sizer.next_size() == 7
    assert not sizer.adaptive


def _fast_then_slow(x: int) -> int:
    if x >= 6000:
        time.sleep(0.001)
    return x


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_imap_goes_on_when_its_chunks_shrink_after_large_ones(backend: str) -> None:
    # Tiny tasks grow the chunks to their largest; slower ones then shrink the read-ahead
    # window below one such chunk. A consumer that caught up must have reported that
    # chunk before it waits, or the Pool waits for room it already has: both wait for
    # ever (this test's timeout fails it).
    with shoal.Pool(1, backend=backend) as pool:
        assert list(pool.imap(_fast_then_slow, range(9000))) == list(range(9000))


def test_imap_reads_no_more_than_buffersize_items_ahead() -> None:
    # Python 3.16's Pool.imap(buffersize=): the input is read that many items ahead.
    read: list[int] = []

    def numbers() -> Iterator[int]:
        for n in itertools.count():
            read.append(n)
            yield n

    with shoal.Pool(2, backend="thread") as pool:
        results = pool.imap(abs, numbers(), buffersize=3)
        assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
        time.sleep(0.3)
        assert len(read) <= 5 + 3
    with (
        shoal.Pool(1, backend="thread") as pool,
        pytest.raises(ValueError, match="buffersize must be None or > 0"),
    ):
        pool.imap(abs, [], buffersize=0)
