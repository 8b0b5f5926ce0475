"""Large buffers through the pool's shared-memory arena: numpy arrays and other protocol-5
buffers in arguments and results cross with one copy and arrive read-only, built over
shared memory; their blocks go back to the arena when the last array over them is gone."""

from __future__ import annotations

import gc
import os
import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import shoal
from shoal._wire.buffers import THRESHOLD
from shoal.pool._stats import ArenaStats

BIG = THRESHOLD // 8 * 4  # float64 items in a buffer well over the threshold


def _same(x: Any) -> Any:
    return x


def _describe(a: np.ndarray) -> tuple[str, tuple[int, ...], bool, float]:
    return a.dtype.str, a.shape, a.flags.writeable, float(np.asarray(a, dtype=np.float64).sum())


def _fresh(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


def _in_use(pool: shoal.Pool) -> int:
    in_use: int = _arena(pool)["in_use"]
    return in_use


@pytest.fixture(scope="module")
def pool() -> Iterator[shoal.Pool]:
    with shoal.Pool(2) as pool:
        yield pool


ARRAYS = {
    "float64": np.linspace(0, 1, BIG),
    "int8": np.arange(BIG * 8, dtype=np.int8),
    "complex128": np.arange(BIG, dtype=np.complex128) * 1j,
    "bool": np.arange(BIG * 8) % 3 == 0,
    "uint16 3-d": np.arange(64 * 64 * 32, dtype=np.uint16).reshape(64, 64, 32),
    "fortran order": np.asfortranarray(np.arange(BIG, dtype=np.float32).reshape(256, -1)),
    "non-contiguous view": np.arange(BIG * 2, dtype=np.float64)[::2],
    "transposed": np.arange(BIG, dtype=np.int64).reshape(128, -1).T,
    "zero-size": np.zeros((0, 5)),
    "small": np.arange(10),
    "structured": np.zeros(BIG, dtype=[("a", "<i4"), ("b", "<f8")]),
    "datetime64": np.arange(BIG).astype("datetime64[s]"),
    "object": np.array([{"k": i} for i in range(1000)], dtype=object),
}


OUT_OF_BAND = {"float64", "int8", "complex128", "bool", "uint16 3-d", "fortran order"}


@pytest.mark.parametrize("kind", sorted(ARRAYS))
def test_arrays_round_trip_both_ways(pool: shoal.Pool, kind: str) -> None:
    original = ARRAYS[kind]
    back = pool.apply(_same, (original,))
    assert isinstance(back, np.ndarray)
    assert back.dtype == original.dtype
    assert back.shape == original.shape
    assert np.array_equal(back, original)
    if kind in OUT_OF_BAND:
        # It crossed through the arena: read-only, over shared memory; a copy is private.
        assert not back.flags.writeable
        assert not back.flags.owndata
        assert back.copy().flags.writeable
    # What numpy pickles in band (objects, datetimes, small arrays) arrives as a private
    # copy, as without an arena; whatever is read-only is a view of shared memory.
    assert back.flags.writeable or not back.flags.owndata


def test_a_large_result_is_read_only_and_built_over_shared_memory(pool: shoal.Pool) -> None:
    result = pool.apply(_fresh, (BIG * 4,))
    assert not result.flags.writeable
    assert not result.flags.owndata
    with pytest.raises(ValueError, match="read-only"):
        result[0] = 1.0
    mine = result.copy()
    mine[0] = 1.0
    assert mine[0] == 1.0
    assert result[0] == 0.0


def test_a_worker_sees_a_large_argument_read_only(pool: shoal.Pool) -> None:
    dtype, shape, writeable, total = pool.apply(_describe, (np.ones(BIG * 2),))
    assert (dtype, shape, writeable, total) == ("<f8", (BIG * 2,), False, BIG * 2.0)


def test_bytes_like_objects_round_trip(pool: shoal.Pool) -> None:
    data = os.urandom(THRESHOLD * 3)
    values = (data, bytearray(data), memoryview(data), pickle.PickleBuffer(bytearray(data)))
    for value in values:
        back = pool.apply(_same, (value,))
        assert bytes(back) == data
    assert type(pool.apply(_same, (bytearray(data),))) is bytearray
    # A memoryview (which multiprocessing cannot send at all) crosses out of band and
    # comes back as a read-only view of shared memory; a strided one is copied.
    view = pool.apply(_same, (memoryview(data),))
    assert type(view) is memoryview
    assert view.readonly
    strided = memoryview(bytearray(data))[::3]
    assert pool.apply(_same, (strided,)).tobytes() == strided.tobytes()
    # Large bytes and bytearray objects, alone or inside other objects, cross through the
    # arena too (one block each way), and come back as owners of their memory.
    for carrier in (data, bytearray(data), {"payload": data, "rest": [1, 2]}):
        before = _arena(pool)["allocations"]
        assert pool.apply(_same, (carrier,)) == carrier
        assert _arena(pool)["allocations"] - before == 2
    # A large message of small objects stays a plain pickle.
    before = _arena(pool)["allocations"]
    assert pool.apply(len, (list(range(100_000)),)) == 100_000
    assert _arena(pool)["allocations"] == before


def test_blocks_go_back_when_the_last_array_over_them_is_gone(pool: shoal.Pool) -> None:
    gc.collect()
    before = _in_use(pool)
    results = pool.map(_fresh, [BIG * 4] * 6)
    assert _in_use(pool) >= before + 6 * BIG * 4 * 8
    view = results[0][10:20]
    del results
    gc.collect()
    # The slice keeps its block alive, and only its block.
    assert before < _in_use(pool) <= before + 2 * BIG * 4 * 8
    del view
    gc.collect()
    assert _in_use(pool) == before
    # Arguments: the parent frees their blocks once the chunk is answered.
    pool.map(_describe, [np.ones(BIG * 2)] * 10)
    assert _in_use(pool) == before


_kept: list[np.ndarray] = []


def _keep(a: np.ndarray) -> float:
    _kept.append(a)  # a task that holds on to its argument
    return float(a.sum())


def _kept_sum() -> float:
    return float(sum(a.sum() for a in _kept))


def test_an_argument_a_task_keeps_stays_valid_in_the_worker() -> None:
    with shoal.Pool(1) as pool:
        for i in range(5):
            assert pool.apply(_keep, (np.full(BIG, float(i)),)) == BIG * i
            # Fresh arguments would reuse a block the parent freed too soon.
            pool.apply(_describe, (np.full(BIG, 99.0),))
        assert pool.apply(_kept_sum) == BIG * (0 + 1 + 2 + 3 + 4)


_kept_raw: list[Any] = []


def _keep_raw(buffer: Any) -> str:
    _kept_raw.append(buffer)  # the raw buffer itself, no array over it
    return type(buffer).__name__


def _kept_raw_sums() -> list[float]:
    return [float(np.frombuffer(b, dtype=np.float64).sum()) for b in _kept_raw]


def test_a_raw_buffer_a_task_keeps_stays_valid_in_the_worker() -> None:
    # A pickle.PickleBuffer argument arrives as a read-only memoryview over the block:
    # keeping it keeps the block (the worker takes it over; the parent does not free it).
    with shoal.Pool(1) as pool:
        for i in range(4):
            raw = pickle.PickleBuffer(np.full(BIG, float(i)).data)
            assert pool.apply(_keep_raw, (raw,)) == "memoryview"
            pool.apply(_describe, (np.full(BIG, 99.0),))  # would reuse a freed block
        assert pool.apply(_kept_raw_sums) == [BIG * float(i) for i in range(4)]


def _fail_on(a: np.ndarray) -> None:
    raise ValueError(f"no use for {a.shape}")


def test_a_task_that_only_read_its_argument_leaves_its_block_to_the_parent() -> None:
    # Nothing of the worker holds the argument once the chunk ends (not the task loop's
    # variables, not a failure's traceback): the parent frees the block at once.
    with shoal.Pool(1) as pool:
        before = _in_use(pool)
        assert pool.apply(_describe, (np.ones(BIG),))[3] == BIG
        assert _in_use(pool) == before
        assert pool.starmap(_describe, [(np.ones(BIG),)])[0][3] == BIG
        assert _in_use(pool) == before
        with pytest.raises(ValueError, match="no use for"):
            pool.apply(_fail_on, (np.ones(BIG),))
        assert _in_use(pool) == before


class _DiesOnce:
    """A result whose pickling kills its worker, the first time: after the task kept its
    argument (the worker took the block over), before the chunk is answered."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), 9)
        return int, (7,)


def _keep_and_die_once(a: np.ndarray, marker: str) -> Any:  # (arrives as 7: see _DiesOnce)
    _kept.append(a)
    return _DiesOnce(marker)


def test_an_argument_kept_by_a_worker_that_died_is_still_there_for_the_retry(
    tmp_path: Any,
) -> None:
    marker = str(tmp_path / "died")
    with shoal.Pool(1, retries=1) as pool:
        big = np.full(BIG, 3.0)
        assert pool.apply(_keep_and_die_once, (big, marker)) == 7
        assert os.path.exists(marker)
        # The retry read the argument (and kept it): the block was not freed under it,
        # and no later argument was given the same memory.
        for _ in range(4):
            assert pool.apply(_describe, (np.full(BIG, 5.0),))[3] == BIG * 5.0
        assert pool.apply(_kept_sum) == BIG * 3.0


def test_results_stay_valid_after_the_pool_is_gone() -> None:
    with shoal.Pool(2) as pool:
        results = pool.map(_fresh, [BIG * 2] * 4)
    pool.join()
    del pool
    gc.collect()
    for r in results:
        assert np.array_equal(r, np.arange(BIG * 2, dtype=np.float64))


def test_past_the_budget_buffers_are_copied_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The warning comes once per process: as if no earlier test had drawn it.
    monkeypatch.setattr(shoal._wire.buffers, "_warned_full", False)
    budget = 4 << 20
    with shoal.Pool(1, arena_bytes=budget) as pool:
        held = [pool.apply(_fresh, (BIG,))]  # fits
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            big = pool.apply(_describe, (np.ones(budget // 8 * 2),))
        assert big[1] == (budget // 8 * 2,)
        assert big[3] == budget // 8 * 2
        assert _arena(pool)["refused"] >= 1
        # Still right, only copied; the warning says what to do.
        assert [w.category for w in caught if "arena_bytes" in str(w.message)] == [ResourceWarning]
        assert np.array_equal(held[0], np.arange(BIG, dtype=np.float64))


def test_arena_bytes_is_checked() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="arena_bytes"):
            shoal.Pool(1, arena_bytes=bad)


def _arena(pool: shoal.Pool) -> ArenaStats:
    arena = pool.stats().arena
    assert arena is not None, "the process backend reports its arena"
    return arena
