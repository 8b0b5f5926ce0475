"""shoal's RLock, Condition, Event, Barrier, Value and Array across real processes: a
program written for multiprocessing with ``import shoal as multiprocessing``, processes
killed holding a lock or inside ``wait``, and the refusals."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

import shoal
from scripts import run_script
from shoal._mp.conditions import Condition
from shoal._mp.locks import OwnerDiedWarning, RLock, Semaphore

PROGRAM = """
import shoal as multiprocessing

lock, count = multiprocessing.RLock(), multiprocessing.Value("i", 0)
slots = multiprocessing.Array("d", 4)
raw, raws = multiprocessing.RawValue("q", 0), multiprocessing.RawArray("i", 2)
condition, started = multiprocessing.Condition(), multiprocessing.Event()
barrier = multiprocessing.Barrier(3)  # both workers and this process

def init(*shared):
    global LOCK, COUNT, SLOTS, RAW, RAWS, CONDITION, STARTED, BARRIER
    LOCK, COUNT, SLOTS, RAW, RAWS, CONDITION, STARTED, BARRIER = shared
    BARRIER.wait(timeout=60)

def task(x):
    assert STARTED.wait(timeout=60)
    with LOCK, LOCK:  # recursive
        COUNT.value += 1
        RAW.value += x
    with SLOTS.get_lock():
        SLOTS[x % 4] += 1.0
    with CONDITION:
        RAWS[0] += 1
        CONDITION.notify_all()
    return x * x

shared = (lock, count, slots, raw, raws, condition, started, barrier)
pool = multiprocessing.Pool(2, initializer=init, initargs=shared, start_method=START)
assert barrier.wait(timeout=60) in (0, 1, 2)
result = pool.map_async(task, range(40), chunksize=1)
started.set()
with condition:
    assert condition.wait_for(lambda: raws[0] == 40, timeout=60), raws[0]
assert result.get(timeout=60) == [x * x for x in range(40)]
assert count.value == 40 and raw.value == sum(range(40)), (count.value, raw.value)
assert list(slots) == [10.0] * 4, list(slots)
pool.close()
pool.join()
print("ok")
"""


def test_a_multiprocessing_program_on_shoal_primitives(
    tmp_path: Path, pool_start_method: str
) -> None:
    assert "ok" in run_script(PROGRAM, tmp_path, pool_start_method).stdout


def _hold(lock: Any, ready: Semaphore) -> None:
    lock.acquire()
    lock.acquire()  # twice: the take-over must not need two releases by the dead
    ready.release()
    signal.pause()


def _take(lock: Any, done: Semaphore) -> None:
    with pytest.warns(OwnerDiedWarning):
        assert lock.acquire(timeout=30)
    lock.release()
    done.release()


@pytest.mark.parametrize("kind", ["RLock", "Value"])
def test_a_killed_holder_never_wedges_the_others(start_method: str, kind: str) -> None:
    ctx: Any = multiprocessing.get_context(start_method)
    lock = shoal.RLock() if kind == "RLock" else shoal.Value("i", 0).get_lock()
    ready, done = Semaphore(0), Semaphore(0)
    holder = ctx.Process(target=_hold, args=(lock, ready))
    holder.start()
    assert ready.acquire(timeout=30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    other = ctx.Process(target=_take, args=(lock, done))
    other.start()
    other.join()
    assert other.exitcode == 0
    assert done.acquire(timeout=0)


def _wait_forever(cond: Condition, ready: Semaphore) -> None:
    with cond:
        ready.release()
        cond.wait()


def test_a_waiter_killed_inside_wait_delays_notify_but_never_hangs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (notify waits for the dead waiter this long: 10 s by default.)
    monkeypatch.setattr("shoal._mp.conditions.NOTIFY_PATIENCE", 1.0)
    ctx: Any = multiprocessing.get_context("spawn")
    cond, ready = Condition(), Semaphore(0)
    waiter = ctx.Process(target=_wait_forever, args=(cond, ready))
    waiter.start()
    assert ready.acquire(timeout=30)
    with cond:  # the waiter is inside wait(): it released the lock
        pass
    os.kill(waiter.pid, signal.SIGKILL)
    waiter.join()
    woke: list[bool] = []

    def live_waiter() -> None:
        with cond:
            woke.append(cond.wait(timeout=60))

    thread = threading.Thread(target=live_waiter)
    thread.start()
    while not woke and thread.is_alive():
        with cond:
            cond.notify_all()
        thread.join(0.05)
    thread.join()
    assert woke == [True]


def test_recursion_and_ownership_in_one_process() -> None:
    lock = RLock()
    assert lock.acquire()
    assert lock.acquire(timeout=0)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            lock.release()
        except AssertionError as exc:
            errors.append(exc)
        assert not lock.acquire(timeout=0.01)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1
    lock.release()
    lock.release()
    with pytest.raises(AssertionError, match="not owned"):
        lock.release()
    with pytest.raises(AssertionError, match="not owned"):
        Condition().wait(0)
    with pytest.raises(AssertionError, match="not owned"):
        Condition(shoal.Lock()).notify()


def _try_the_held_rlock(lock: RLock) -> None:
    # A forked copy of the handle shows the parent's record; it must not count as ours.
    assert not lock._is_owned()
    assert not lock.acquire(timeout=0.05)
    with pytest.raises(AssertionError, match="not owned"):
        lock.release()


def test_a_forked_child_holds_nothing_its_parent_held() -> None:
    lock = RLock()
    with lock:
        child = multiprocessing.get_context("fork").Process(
            target=_try_the_held_rlock, args=(lock,)
        )
        child.start()
        child.join()
        assert child.exitcode == 0
        assert lock._is_owned()
    assert repr(lock) == "<RLock(None, 0)>"  # as multiprocessing says it


def test_condition_wakes_threads_one_by_one() -> None:
    cond, woke = Condition(), []

    def waiter() -> None:
        with cond:
            woke.append(cond.wait(timeout=30))

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: cond._sleeping_count.get_value() == 3, "three threads asleep in wait()")
    with cond:
        cond.notify()

    def threads_alive() -> int:
        return sum(t.is_alive() for t in threads)

    wait_for(lambda: threads_alive() <= 2, "the notified thread to leave wait()")
    assert threads_alive() == 2
    with cond:
        cond.notify_all()
    for t in threads:
        t.join()
    assert woke == [True, True, True]


def test_barrier_breaks_on_timeout_and_abort() -> None:
    barrier = shoal.Barrier(2, timeout=0.05)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()
    assert barrier.broken
    barrier.reset()
    assert not barrier.broken
    assert barrier.n_waiting == 0
    barrier.abort()
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()


@pytest.mark.parametrize(
    "make",
    [
        shoal.RLock,
        shoal.Condition,
        shoal.Event,
        lambda: shoal.Barrier(2),
        lambda: shoal.Value("i"),
        lambda: shoal.RawArray("i", 3),
    ],
    ids=["RLock", "Condition", "Event", "Barrier", "Value", "RawArray"],
)
def test_pickling_outside_process_start_is_refused(make: Any) -> None:
    with pytest.raises(RuntimeError, match="through inheritance"):
        pickle.dumps(make())


def test_an_unknown_type_code_names_the_known_ones() -> None:
    with pytest.raises(TypeError, match="bad typecode 'z'"):
        shoal.Value("z")


def test_the_primitives_read_as_multiprocessings_do() -> None:
    # Logs print locks: each repr reads as multiprocessing's own, held or not, by this
    # thread or another; and 3.14's locked() is there on every Python.
    import threading

    for module in (multiprocessing, shoal):
        seen = []
        for make in (module.Lock, module.RLock):
            lock = make()
            seen.append(repr(lock))
            lock.acquire()
            seen += [repr(lock), str(lock.locked()) if module is shoal else "True"]
            here: list[str] = []
            lock.release()

            def take(lock: Any = lock, here: list[str] = here) -> None:
                lock.acquire()
                here.append(repr(lock))

            thread = threading.Thread(target=take, name="T1")
            thread.start()
            thread.join()
            seen += [*here, repr(lock)]
        seen += [repr(module.Semaphore(2)), repr(module.BoundedSemaphore(3))]
        seen.append(repr(module.Condition()))
        event = module.Event()
        seen.append(repr(event).split(" at ")[0] + repr(event).rsplit(" ", 1)[1])
        if module is multiprocessing:
            theirs = seen
    assert seen == theirs
    assert theirs[:5] == [
        "<Lock(owner=None)>",
        "<Lock(owner=MainProcess)>",
        "True",
        "<Lock(owner=MainProcess|T1)>",
        "<Lock(owner=SomeOtherThread)>",
    ]
