"""shoal.dummy.Queue: the thread twin keeps shoal.Queue's API and semantics."""

from __future__ import annotations

import queue
import threading

import pytest

from shoal.dummy import Queue


def test_objects_are_shared_not_copied() -> None:
    q: Queue[list[int]] = Queue()
    item = [1]
    q.put(item)
    assert q.get() is item


def test_batches_and_limits() -> None:
    q: Queue[int] = Queue(maxsize=3)
    q.put_many([1, 2])
    with pytest.raises(queue.Full):
        q.put_many([3, 4], block=False)
    assert q.qsize() == 2
    assert q.get_many(10) == [1, 2]
    with pytest.raises(queue.Empty):
        q.get_many(block=False)
    with pytest.raises(ValueError, match="max_messages"):
        q.get_many(0)


def test_a_batch_larger_than_maxsize_goes_in_one_by_one() -> None:
    q: Queue[int] = Queue(maxsize=2)
    got: list[int] = []

    def drain() -> None:
        while len(got) < 5:
            got.extend(q.get_many(10, timeout=10))

    reader = threading.Thread(target=drain)
    reader.start()
    q.put_many(range(5), timeout=10)
    reader.join(10)
    assert got == [0, 1, 2, 3, 4]


def test_threads_deliver_everything_once() -> None:
    q: Queue[int | None] = Queue()
    out: list[int] = []
    lock = threading.Lock()

    def consume() -> None:
        while (item := q.get()) is not None:
            with lock:
                out.append(item)

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    for t in consumers:
        t.start()
    q.put_many(range(10_000))
    q.put_many([None, None])
    for t in consumers:
        t.join(30)
    assert sorted(out) == list(range(10_000))


def test_close_semantics_match_shoal_queue() -> None:
    q: Queue[int] = Queue()
    with pytest.raises(ValueError, match="only be called after close"):
        q.join_thread()
    q.close()
    with pytest.raises(ValueError, match="closed"):
        q.put(1)
    with pytest.raises(ValueError, match="closed"):
        q.get()
    q.join_thread()
    q.cancel_join_thread()
