"""shoal.Queue: multiprocessing.Queue's behaviour, across real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from typing import Any

import programs
import pytest
from waiting import wait_for

import shoal
from conftest import memfd_mappings, open_fds
from queue_workers import block_in_get, consume, echo, pool_init, pool_task, produce
from shoal import Queue
from shoal.errors import PicklingError

# Some tests start multiprocessing's fork processes while pytest's faulthandler watchdog
# thread runs: from Python 3.12 os.fork() warns of the thread, and 3.15 raises that
# warning when warnings are errors (after the child exists). CPython's own tests ignore it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


def test_objects_round_trip_in_order() -> None:
    q: Queue[Any] = Queue()
    items: list[Any] = [1, "two", b"three", bytearray(b"4"), None, {"five": [5.0]}, (6,), b""]
    for item in items:
        q.put(item)
    assert q.qsize() == len(items)
    got = [q.get() for _ in items]
    assert got == items
    assert [type(x) for x in got] == [type(x) for x in items]
    assert q.empty()


def test_empty_and_full_raise_the_stdlib_exceptions() -> None:
    q: Queue[int] = Queue(maxsize=2)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    q.put(1)
    q.put_nowait(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert [q.get(), q.get()] == [1, 2]
    assert shoal.Full is queue.Full
    assert shoal.Empty is queue.Empty


def test_put_many_is_all_or_nothing_when_it_fits() -> None:
    q: Queue[int] = Queue(maxsize=3)
    q.put(0)
    with pytest.raises(queue.Full):
        q.put_many([1, 2, 3], block=False)
    assert q.qsize() == 1
    q.put_many([1, 2])
    assert q.get_many(10) == [0, 1, 2]


def test_get_many_takes_what_is_waiting_up_to_the_limit() -> None:
    q: Queue[int] = Queue()
    q.put_many(range(10))
    assert q.get_many(4) == [0, 1, 2, 3]
    assert q.get_many() == list(range(4, 10))
    with pytest.raises(queue.Empty):
        q.get_many(block=False)
    with pytest.raises(ValueError, match="max_messages"):
        q.get_many(0)


def test_a_message_larger_than_the_ring_gets_through_another_process() -> None:
    ctx = mp.get_context("forkserver")
    inbox: Queue[bytes] = Queue(capacity=4096)
    outbox: Queue[bytes] = Queue(capacity=4096)
    big = os.urandom(3 << 20)
    child = ctx.Process(target=echo, args=(inbox, outbox))
    child.start()
    inbox.put(big)
    assert outbox.get(timeout=60) == big * 2
    child.join(30)
    assert child.exitcode == 0


def test_an_unpicklable_object_is_named_and_leaves_the_queue_unchanged() -> None:
    q: Queue[Any] = Queue()
    q.put("before")

    class Holder:
        def __init__(self) -> None:
            self.lock = threading.Lock()

    with pytest.raises(PicklingError, match=r"obj\.lock") as info:
        q.put(Holder())
    assert "lock" in info.value.culprit_type
    with pytest.raises(PicklingError):
        q.put_many(["fine", Holder()])
    assert q.qsize() == 1
    assert q.get() == "before"


def test_lambdas_and_local_objects_travel_by_value() -> None:
    q: Queue[Any] = Queue()
    offset = 10
    q.put(lambda x: x + offset)
    assert q.get()(1) == 11


def test_use_after_close_raises_value_error() -> None:
    q: Queue[int] = Queue()
    q.put(1)
    with pytest.raises(ValueError, match="after close"):
        q.join_thread()
    q.close()
    with pytest.raises(ValueError, match="closed"):
        q.put(2)
    with pytest.raises(ValueError, match="closed"):
        q.get()
    q.join_thread()
    q.cancel_join_thread()


def test_messages_put_before_close_stay_for_other_handles() -> None:
    q: Queue[int] = Queue()
    twin: Queue[int] = pickle.loads(pickle.dumps(q))
    q.put(7)
    q.close()
    assert twin.get(timeout=5) == 7


def test_two_producers_two_consumers_deliver_every_message_exactly_once() -> None:
    ctx = mp.get_context("fork")
    per_producer = 100_000
    q: Queue[Any] = Queue()
    out: Queue[Any] = Queue()
    producers = [ctx.Process(target=produce, args=(q, p, per_producer)) for p in range(2)]
    consumers = [ctx.Process(target=consume, args=(q, out)) for _ in range(2)]
    for proc in producers + consumers:
        proc.start()
    for proc in producers:
        proc.join(120)
        assert proc.exitcode == 0
    q.put_many([None, None])
    each_got = [out.get(timeout=120), out.get(timeout=120)]  # one list per consumer
    for proc in consumers:
        proc.join(30)
        assert proc.exitcode == 0
    got = each_got[0] + each_got[1]
    counts = Counter(map(tuple, got))
    assert len(got) == 2 * per_producer
    assert set(counts) == {(p, i) for p in range(2) for i in range(per_producer)}
    # Each producer's messages arrive in order at each consumer.
    for seen in each_got:
        for p in range(2):
            numbers = [i for producer, i in seen if producer == p]
            assert numbers == sorted(numbers), f"producer {p} out of order"
    assert q.empty()


def test_a_consumer_killed_while_blocked_in_get_does_not_wedge_the_rest() -> None:
    ctx = mp.get_context("fork")
    q: Queue[str] = Queue()
    ready: Queue[str] = Queue()
    child = ctx.Process(target=block_in_get, args=(q, ready))
    child.start()
    assert ready.get(timeout=30) == "ready"
    assert child.pid is not None
    _until_waiting_on_a_futex(child.pid)  # blocked in get, holding the read lock
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    q.put("after")
    assert q.get(timeout=30) == "after"


def test_queue_as_process_argument_under_each_start_method(start_method: str) -> None:
    ctx: Any = mp.get_context(start_method)  # typeshed types the str overload as BaseContext
    inbox: Queue[int] = Queue()
    outbox: Queue[int] = Queue()
    child = ctx.Process(target=echo, args=(inbox, outbox))
    child.start()
    inbox.put(21)
    assert outbox.get(timeout=60) == 42
    child.join(30)
    assert child.exitcode == 0


def test_queue_in_pool_initargs_under_each_start_method(start_method: str) -> None:
    ctx = mp.get_context(start_method)
    q: Queue[int] = Queue()
    with ctx.Pool(2, initializer=pool_init, initargs=(q,)) as pool:
        assert pool.map(pool_task, range(10)) == list(range(10))
    assert sorted(q.get_many(100, timeout=10) + _drain(q)) == [x * x for x in range(10)]


def _drain(q: Queue[int]) -> list[int]:
    items: list[int] = []
    while True:
        try:
            items.extend(q.get_many(100, block=False))
        except queue.Empty:
            return items


def test_queue_can_travel_inside_a_message() -> None:
    carrier: Queue[Queue[str]] = Queue()
    inner: Queue[str] = Queue()
    carrier.put(inner)
    received = carrier.get(timeout=10)
    inner.put("through the carried queue")
    assert received.get(timeout=10) == "through the carried queue"


def test_a_thousand_queues_leave_descriptors_and_memory_as_they_were() -> None:
    Queue().close()  # warm up imports and lazy allocations
    fds, maps = open_fds(), memfd_mappings()
    for _ in range(1000):
        q: Queue[int] = Queue()
        q.put(1)
        q.close()
    for _ in range(1000):
        dropped: Queue[str] = Queue(capacity=8192)
        dropped.put("dropped without close")
    del dropped
    leaked = {fd: link for fd, link in open_fds().items() if fds.get(fd) != link}
    assert not leaked
    assert memfd_mappings() == maps


def _interrupt_while_blocked(setup: str, blocking_call: str, report: str) -> str:
    """Runs ``blocking_call`` in a fresh interpreter, sends SIGINT once it blocks, and
    returns what the script printed after catching KeyboardInterrupt."""
    script = textwrap.dedent(
        f"""
        import sys, shoal
        {setup}
        print("blocking", flush=True)
        try:
            {blocking_call}
        except KeyboardInterrupt:
            print({report}, flush=True)
            sys.exit(3)
        """
    )
    # A job of its own, SIGINT at its default, killed with all it started when done.
    argv = [sys.executable, "-c", script]
    with programs.started(argv, stdout=subprocess.PIPE) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "blocking"
        _until_waiting_on_a_futex(child.pid)
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=10)
        assert child.returncode == 3
        return out.strip()


def _until_waiting_on_a_futex(pid: int) -> None:
    """Returns once the main thread of ``pid`` sleeps in a futex wait (where a blocked
    ``get`` or ``put`` sleeps)."""

    def in_a_futex_wait() -> bool:
        with open(f"/proc/{pid}/wchan") as wchan:
            return "futex" in wchan.read()

    wait_for(in_a_futex_wait, f"process {pid} to block in a futex wait")


def test_ctrl_c_interrupts_a_blocked_get() -> None:
    assert _interrupt_while_blocked("q = shoal.Queue()", "q.get()", '"interrupted"') == (
        "interrupted"
    )


def test_ctrl_c_interrupts_a_put_blocked_on_a_full_queue() -> None:
    setup = "q = shoal.Queue(maxsize=1); q.put(1)"
    said = _interrupt_while_blocked(setup, "q.put(2)", '"interrupted", q.qsize()')
    assert said == "interrupted 1"


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_large_arrays_cross_without_a_copy(method: str) -> None:
    import numpy as np

    from queue_workers import array_facts, array_maker

    ctx: Any = mp.get_context(method)  # a name, not a literal: typed as the base context
    inbox: Queue[Any] = Queue()
    outbox: Queue[Any] = Queue()
    worker = ctx.Process(target=array_facts, args=(inbox, outbox))
    worker.start()
    inbox.put(np.ones(1 << 20))
    inbox.put(np.arange(10))  # small: in the message, a private copy
    inbox.put(None)
    assert outbox.get(timeout=30) == (float(1 << 20), False, False)
    assert outbox.get(timeout=30)[:2] == (45.0, True)
    worker.join(30)
    # The other way, from a process that has exited by the time the arrays are read.
    maker = ctx.Process(target=array_maker, args=(outbox, 1 << 20, 3))
    maker.start()
    maker.join(30)
    got = [outbox.get(timeout=30) for _ in range(3)]
    assert [float(a[0]) for a in got] == [0.0, 1.0, 2.0]
    assert not any(a.flags.writeable for a in got)
    # Large bytes inside a message go through the arena as well.
    big = os.urandom(1 << 20)
    inbox.put(("label", big))
    assert inbox.get(timeout=30) == ("label", big)
