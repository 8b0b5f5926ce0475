"""shoal's Lock and semaphores across real processes, and a holder killed holding one."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import warnings
from typing import Any

import pytest

from shoal._mp.locks import BoundedSemaphore, Lock, OwnerDiedWarning, Semaphore


def _hold(lock: Lock, ready: Semaphore) -> None:
    lock.acquire()
    ready.release()
    signal.pause()


def _take(lock: Lock, done: Semaphore) -> None:
    with pytest.warns(OwnerDiedWarning):
        assert lock.acquire(timeout=30)
    lock.release()
    done.release()


def test_a_killed_holder_never_wedges_the_others(start_method: str) -> None:
    ctx: Any = multiprocessing.get_context(start_method)  # typeshed: BaseContext has no Process
    lock, ready, done = Lock(), Semaphore(0), Semaphore(0)
    holder = ctx.Process(target=_hold, args=(lock, ready))
    holder.start()
    assert ready.acquire(timeout=30)
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    other = ctx.Process(target=_take, args=(lock, done))
    other.start()
    other.join()
    assert other.exitcode == 0
    assert done.acquire(timeout=0)


def _take_and_leave(lock: Lock) -> None:
    lock.acquire()  # and exit holding it


def _die_holding(ctx: Any, lock: Lock) -> None:
    holder = ctx.Process(target=_take_and_leave, args=(lock,))
    holder.start()
    holder.join()
    assert holder.exitcode == 0


def test_taking_over_a_dead_holders_lock_warns_at_the_callers_line(start_method: str) -> None:
    ctx: Any = multiprocessing.get_context(start_method)
    lock = Lock()
    _die_holding(ctx, lock)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OwnerDiedWarning)
        with pytest.raises(OwnerDiedWarning, match="died holding it"):
            lock.acquire(timeout=30)
    # The warning was raised instead of handing the lock over: the lock was given back.
    assert lock.get_value() == 1
    _die_holding(ctx, lock)
    with pytest.warns(OwnerDiedWarning) as caught:
        assert lock.acquire(timeout=30)
    assert caught[0].filename == __file__
    assert lock.owner_died
    lock.release()
    assert lock.acquire(timeout=0)
    assert not lock.owner_died
    lock.release()


_ROUNDS = 5000


def _count_under(lock: Any, total: Any) -> None:
    def rounds() -> None:
        for _ in range(_ROUNDS):
            with lock:
                total.value += 1  # a read and a write: a lost update shows in the sum

    threads = [threading.Thread(target=rounds) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_threads_of_several_processes_never_lose_an_update(start_method: str, kind: str) -> None:
    # The uncontended path (a try of the state mutex, attached) and the waiting one
    # (detached, on the doorbell) racing each other across processes and threads.
    import shoal

    ctx: Any = multiprocessing.get_context(start_method)
    lock, total = getattr(shoal, kind)(), shoal.RawValue("i", 0)
    workers = [ctx.Process(target=_count_under, args=(lock, total)) for _ in range(3)]
    for worker in workers:
        worker.start()
    _count_under(lock, total)
    for worker in workers:
        worker.join()
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert total.value == 4 * 2 * _ROUNDS


def test_counting_timeouts_and_over_release() -> None:
    s = BoundedSemaphore(2)
    assert s.acquire()
    assert s.acquire(False)
    assert not s.acquire(timeout=0.01)
    s.release()
    s.release()
    with pytest.raises(ValueError, match="released too many times"):
        s.release()
    assert s.get_value() == 2


def test_a_bounded_semaphore_of_zero_refuses_every_release() -> None:
    with pytest.raises(ValueError, match="released too many times"):
        BoundedSemaphore(0).release()
    unbounded = Semaphore(0)
    for _ in range(3):
        unbounded.release()
    assert unbounded.get_value() == 3


def test_a_failed_acquire_leaves_owner_died_as_the_last_success_set_it() -> None:
    lock = Lock()
    _die_holding(multiprocessing.get_context("fork"), lock)
    with pytest.warns(OwnerDiedWarning):
        assert lock.acquire(timeout=30)
    assert lock.owner_died
    # Refused (held, by this very handle): without a wait, and after one.
    assert not lock.acquire(False)
    assert not lock.acquire(timeout=0)
    assert not lock.acquire(timeout=0.01)
    assert lock.owner_died
    lock.release()
    # The next success is an ordinary one: false again, and refusals leave it so.
    assert lock.acquire()
    assert not lock.owner_died
    assert not lock.acquire(False)
    assert not lock.acquire(timeout=0.01)
    assert not lock.owner_died
    lock.release()


def test_an_rlock_takes_no_arguments_and_guards_its_condition_calls() -> None:
    from shoal._mp.locks import RLock

    with pytest.raises(TypeError):
        RLock(0)  # type: ignore[call-arg]
    lock = RLock()
    with pytest.raises(AssertionError, match="not owned"):
        lock._release_save()
    assert lock.acquire()
    assert lock.acquire()
    assert lock._release_save() == 2
    assert not lock._is_owned()
    lock._acquire_restore(2)
    lock.release()
    lock.release()
    assert not lock._is_owned()


def test_pickling_outside_process_start_is_refused() -> None:
    import pickle

    with pytest.raises(RuntimeError, match="through inheritance"):
        pickle.dumps(Lock())
