"""``shoal.shared``: a large object placed in shared memory once and read by every task."""

from __future__ import annotations

import os

import numpy as np
import pytest

import shoal


def _look(h: shoal.Shared[np.ndarray]) -> tuple[float, bool, bool, int, int]:
    a = h.value
    return float(a[1234]), a.flags.writeable, a.flags.owndata, id(a), os.getpid()


def _total(h: shoal.Shared[dict[str, np.ndarray]], key: str) -> float:
    return float(h.value[key].sum())


def test_every_task_reads_the_same_object_without_a_copy() -> None:
    data = np.arange(4 << 20, dtype=np.float64)
    handle = shoal.shared(data)
    assert handle.value is data  # the creator keeps its own object
    with shoal.Pool(2) as pool:
        seen = pool.map(_look, [handle] * 40, chunksize=1)
    assert {s[0] for s in seen} == {1234.0}
    # Read-only, over shared memory (no private copy), rebuilt once per worker.
    assert all(not writeable and not owndata for _, writeable, owndata, _, _ in seen)
    per_worker: dict[int, set[int]] = {}
    for _, _, _, ident, pid in seen:
        per_worker.setdefault(pid, set()).add(ident)
    assert all(len(ids) == 1 for ids in per_worker.values())


def test_any_object_with_buffers_inside_and_the_thread_backend() -> None:
    handle = shoal.shared({"a": np.ones(1 << 20), "b": np.full(10, 2.0), "name": "x"})
    for backend in ("process", "thread"):
        with shoal.Pool(2, backend=backend) as pool:
            assert pool.starmap(_total, [(handle, "a"), (handle, "b")]) == [1 << 20, 20.0]


def test_a_released_object_cannot_be_attached_any_more() -> None:
    handle = shoal.shared(np.zeros(1 << 16))
    with shoal.Pool(1) as pool:
        assert pool.apply(_look, (handle,))[0] == 0.0  # attached: stays readable
        handle.release()
        assert pool.apply(_look, (handle,))[0] == 0.0
    with shoal.Pool(1) as pool, pytest.raises(ValueError, match=r"shoal\.shared"):
        pool.apply(_look, (handle,))


def test_a_function_that_closes_over_a_shared_object_reads_it(backend: str) -> None:
    # The object travels inside the function's own pickle (not as an argument): on a
    # cluster, its reference must still resolve there (a plain pickle of a Ray reference
    # never did: the map waited for ever).
    table = shoal.shared(np.arange(100_000, dtype=np.float64))
    with shoal.Pool(2, backend=backend) as pool:
        got = pool.map_async(lambda i: float(table.value[i * 1000]), range(10)).get(timeout=120)
    assert got == [i * 1000.0 for i in range(10)]
