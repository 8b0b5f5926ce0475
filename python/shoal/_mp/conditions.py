"""``shoal.Condition``, ``shoal.Event`` and ``shoal.Barrier``: multiprocessing's API built
on shoal's robust ``RLock``, ``Lock`` and ``Semaphore``.

Each is made of shoal locks and semaphores, so it travels where they do (a Pool's
``initargs``, a ``Process``'s arguments) and a process killed while holding one of its locks
never wedges the others (the next acquirer takes it over with ``OwnerDiedWarning``).

A ``Condition`` counts its sleepers and the sleepers it woke in semaphores, as
multiprocessing's does: a waiter killed inside ``wait`` stays counted as a sleeper, so a
later ``notify`` of it waits for that process's wake-up up to ``NOTIFY_PATIENCE`` seconds
before it goes on without it (multiprocessing's would wait forever).
"""

from __future__ import annotations

import multiprocessing.context
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

from shoal._mp.locks import Lock, RLock, Semaphore

__all__ = ["NOTIFY_PATIENCE", "Barrier", "Condition", "Event"]

T = TypeVar("T")

# How long notify() waits for a woken waiter to take its wake-up before deciding that
# the waiter died inside wait().
NOTIFY_PATIENCE: Final = 10.0


def _require_spawning(obj: object) -> None:
    if multiprocessing.context.get_spawning_popen() is None:
        raise RuntimeError(
            f"{type(obj).__name__} objects should only be shared between processes "
            "through inheritance"
        )


class _Lockish(Protocol):
    def acquire(self, block: bool = ..., timeout: float | None = ...) -> bool: ...
    def release(self) -> None: ...


class Condition:
    """A process-shared condition variable, with ``multiprocessing.Condition``'s API; its
    lock is a shoal ``RLock`` unless one is given.

    Example:
        >>> from shoal import Condition
        >>> cond = Condition()
        >>> with cond:
        ...     cond.notify_all()  # nobody waits: nothing happens
        ...     cond.wait(timeout=0.01)
        False
    """

    def __init__(self, lock: _Lockish | None = None) -> None:
        self._start(RLock() if lock is None else lock, Semaphore(0), Semaphore(0), Semaphore(0))

    def _start(
        self, lock: _Lockish, sleeping: Semaphore, woken: Semaphore, wake: Semaphore
    ) -> None:
        self._lock = lock
        self._sleeping_count, self._woken_count, self._wait_semaphore = sleeping, woken, wake
        self.acquire = lock.acquire
        self.release = lock.release

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def _is_owned(self) -> bool:
        owned = getattr(self._lock, "_is_owned", None)
        if owned is not None:
            return bool(owned())
        # A plain lock cannot say who holds it; if it can be taken, nobody did.
        if self._lock.acquire(False):
            self._lock.release()
            return False
        return True

    def _require_owned(self) -> None:
        if not self._is_owned():
            raise AssertionError("lock is not owned")

    def wait(self, timeout: float | None = None) -> bool:
        """Releases the lock, waits for a notify (up to ``timeout`` seconds), retakes the
        lock; ``False`` if the time ran out."""
        self._require_owned()
        self._sleeping_count.release()
        save = getattr(self._lock, "_release_save", None)
        if save is not None:
            levels = save()  # every level of a recursive lock
        else:
            self._lock.release()
            levels = 1
        try:
            return self._wait_semaphore.acquire(True, timeout)
        finally:
            self._woken_count.release()
            restore = getattr(self._lock, "_acquire_restore", None)
            if restore is not None:
                restore(levels)
            else:
                self._lock.acquire()

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        """Waits until ``predicate()`` is true (up to ``timeout`` seconds) and returns its
        last value."""
        result = predicate()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not result:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self.wait(left)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wakes up to ``n`` waiting processes or threads."""
        self._require_owned()
        if n <= 0:
            return
        # Wake-ups taken by waiters that timed out before they were notified: forget them.
        while self._woken_count.acquire(False):
            self._sleeping_count.acquire(False)
        sleepers = 0
        while sleepers < n and self._sleeping_count.acquire(False):
            self._wait_semaphore.release()
            sleepers += 1
        for _ in range(sleepers):
            # A waiter that died inside wait() never says it woke: go on without it.
            self._woken_count.acquire(True, NOTIFY_PATIENCE)
        # Wake-ups left by waiters that timed out meanwhile must not wake later waiters.
        while self._wait_semaphore.acquire(False):
            pass

    def notify_all(self) -> None:
        """Wakes every waiting process or thread."""
        self.notify(n=1 << 30)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        _require_spawning(self)
        parts = (self._lock, self._sleeping_count, self._woken_count, self._wait_semaphore)
        return (_rebuild_condition, parts)

    def __repr__(self) -> str:
        # As multiprocessing's: its lock, and how many wait.
        waiting = self._sleeping_count.get_value() - self._woken_count.get_value()
        return f"<{type(self).__name__}({self._lock}, {waiting})>"


def _rebuild_condition(
    lock: _Lockish, sleeping: Semaphore, woken: Semaphore, wake: Semaphore
) -> Condition:
    self = Condition.__new__(Condition)
    self._start(lock, sleeping, woken, wake)
    return self


class Event:
    """A process-shared flag, with ``multiprocessing.Event``'s API.

    Example:
        >>> from shoal import Event
        >>> event = Event()
        >>> event.is_set(), event.wait(timeout=0.01)
        (False, False)
        >>> event.set(); event.wait(), event.is_set()
        (True, True)
    """

    def __init__(self) -> None:
        self._cond, self._flag = Condition(Lock()), Semaphore(0)

    def is_set(self) -> bool:
        """Whether the flag is set."""
        with self._cond:
            if self._flag.acquire(False):
                self._flag.release()
                return True
            return False

    def set(self) -> None:
        """Sets the flag and wakes every waiter."""
        with self._cond:
            self._flag.acquire(False)
            self._flag.release()
            self._cond.notify_all()

    def clear(self) -> None:
        """Clears the flag."""
        with self._cond:
            self._flag.acquire(False)

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until the flag is set (up to ``timeout`` seconds); returns the flag."""
        with self._cond:
            if not self._flag.acquire(False):
                self._cond.wait_for(self._peek, timeout)
                if not self._flag.acquire(False):
                    return False
            self._flag.release()
            return True

    def _peek(self) -> bool:
        if self._flag.acquire(False):
            self._flag.release()
            return True
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} at {id(self):#x} {'set' if self.is_set() else 'unset'}>"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        _require_spawning(self)
        return (_rebuild_event, (self._cond, self._flag))


def _rebuild_event(cond: Condition, flag: Semaphore) -> Event:
    self = Event.__new__(Event)
    self._cond, self._flag = cond, flag
    return self


class Barrier(threading.Barrier):
    """A process-shared barrier, with ``multiprocessing.Barrier``'s (and so
    ``threading.Barrier``'s) API: ``threading.Barrier``'s logic over a shoal ``Condition``,
    its state and count in shared memory.

    Example:
        >>> from shoal import Barrier
        >>> barrier = Barrier(1)
        >>> barrier.wait(), barrier.parties, barrier.broken
        (0, 1, False)
    """

    def __init__(
        self, parties: int, action: Callable[[], Any] | None = None, timeout: float | None = None
    ) -> None:
        from shoal._mp.sharedctypes import RawArray

        self.__setstate__((parties, action, timeout, Condition(), RawArray("i", 2)))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._parties, self._action, self._timeout, self._cond, self._shared = state

    def __getstate__(self) -> tuple[Any, ...]:
        _require_spawning(self)
        return (self._parties, self._action, self._timeout, self._cond, self._shared)

    # threading.Barrier keeps these two in attributes: here every process sees one pair.
    @property
    def _state(self) -> int:
        return int(self._shared[0])

    @_state.setter
    def _state(self, value: int) -> None:
        self._shared[0] = value

    @property
    def _count(self) -> int:
        return int(self._shared[1])

    @_count.setter
    def _count(self, value: int) -> None:
        self._shared[1] = value
