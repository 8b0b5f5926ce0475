"""``shoal.Lock``, ``shoal.RLock``, ``shoal.Semaphore`` and ``shoal.BoundedSemaphore``:
multiprocessing's primitives in a memfd segment of their own, that a killed holder never
wedges.

A process that finds a ``Lock`` held by a process that has died takes it over: ``acquire``
returns ``True`` as usual, ``owner_died`` is then true on that handle, and an
``OwnerDiedWarning`` says that what the lock protects may be half-updated.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import threading
from collections.abc import Callable
from multiprocessing.reduction import DupFd
from typing import Any, Self

from shoal._shoal import RLockCore, SyncCore

__all__ = ["BoundedSemaphore", "Lock", "OwnerDiedWarning", "RLock", "Semaphore"]


class OwnerDiedWarning(RuntimeWarning):
    """A lock was taken over from a process that died holding it.

    Example:
        >>> issubclass(OwnerDiedWarning, RuntimeWarning)
        True
    """


class Semaphore(SyncCore):
    """A counter shared between processes, with ``multiprocessing.Semaphore``'s API.

    ``acquire(block=True, timeout=None)``, ``release()``, ``get_value()`` and the ``with``
    statement are the engine's own methods (see ``SyncCore``), so an uncontended
    ``acquire`` and ``release`` run no Python code.

    Example:
        >>> from shoal._mp.locks import Semaphore
        >>> s = Semaphore(2)
        >>> s.acquire(), s.acquire(), s.acquire(timeout=0)
        (True, True, False)
        >>> s.release(); s.get_value()
        1
    """

    def __new__(cls, value: int = 1) -> Self:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        return super().__new__(cls, value, cls._max_for(value))

    @staticmethod
    def _max_for(value: int) -> int | None:
        return None  # no limit

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _to_a_new_process(self, _rebuild)

    def locked(self) -> bool:
        """Whether no unit is free (``acquire(False)`` would fail), as Python 3.14's
        ``multiprocessing`` locks and semaphores say."""
        return self.get_value() == 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__}(value={self.get_value()})>"


class BoundedSemaphore(Semaphore):
    """A ``Semaphore`` whose ``release`` raises ``ValueError`` past its initial value.

    Example:
        >>> from shoal._mp.locks import BoundedSemaphore
        >>> s = BoundedSemaphore(1)
        >>> s.release()
        Traceback (most recent call last):
        ValueError: semaphore or lock released too many times
    """

    @staticmethod
    def _max_for(value: int) -> int | None:
        return value

    def __repr__(self) -> str:
        return f"<{type(self).__name__}(value={self.get_value()}, maxvalue={self.maxvalue})>"


class Lock(BoundedSemaphore):
    """A process-shared lock, with ``multiprocessing.Lock``'s API; a holder that dies never
    wedges the others (see the module's docstring).

    Example:
        >>> from shoal._mp.locks import Lock
        >>> lock = Lock()
        >>> with lock:
        ...     lock.acquire(timeout=0)
        False
    """

    def __new__(cls) -> Self:
        return super().__new__(cls, 1)

    def __repr__(self) -> str:
        # As multiprocessing's: who holds it ("None" when free).
        return f"<{type(self).__name__}(owner={_holder(self.get_value() == 1, self)})>"


class RLock(RLockCore):
    """A process-shared recursive lock, with ``multiprocessing.RLock``'s API: the thread
    that holds it may take it again, and must release it as many times. Who holds it is
    each process's own record (a forked child holds nothing its parent held); the engine's
    own methods do the work, as for :class:`Lock`.

    Example:
        >>> from shoal import RLock
        >>> lock = RLock()
        >>> with lock:
        ...     with lock:
        ...         "held twice"
        'held twice'
        >>> lock.release()
        Traceback (most recent call last):
        AssertionError: attempt to release recursive lock not owned by thread
    """

    def __new__(cls) -> Self:
        return super().__new__(cls)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _to_a_new_process(self, _rebuild_rlock)

    def locked(self) -> bool:
        """Whether some thread holds it, as Python 3.14's ``multiprocessing.RLock`` says."""
        return not self._unlocked()

    def __repr__(self) -> str:
        # As multiprocessing's: the holder and how many times it holds it.
        count = self._count()
        if count:
            return f"<{type(self).__name__}({_name_of_this_thread()}, {count})>"
        holder = _holder(self._unlocked(), self)
        return f"<{type(self).__name__}({holder}, {0 if holder == 'None' else 'nonzero'})>"


def _holder(free: bool, lock: SyncCore | RLockCore) -> str:
    """How multiprocessing's lock reprs name a holder."""
    if free:
        return "None"
    if isinstance(lock, SyncCore) and lock._is_mine():
        return _name_of_this_thread()
    return "SomeOtherThread" if lock._owner_pid() == os.getpid() else "SomeOtherProcess"


def _name_of_this_thread() -> str:
    name: str = multiprocessing.current_process().name
    thread = threading.current_thread().name
    return name if thread == "MainThread" else f"{name}|{thread}"


def _to_a_new_process(
    lock: SyncCore | RLockCore, rebuild: Callable[..., Any]
) -> tuple[Any, tuple[Any, ...]]:
    """How a lock pickles: as its descriptor, only while a process is being started (as
    multiprocessing's own locks do), so that the new process shares the same cell."""
    if multiprocessing.context.get_spawning_popen() is None:
        raise RuntimeError(
            f"{type(lock).__name__} objects should only be shared between processes "
            "through inheritance"
        )
    return (rebuild, (type(lock), DupFd(lock.fileno())))


def _rebuild_rlock(cls: type[RLock], dupfd: Any) -> RLock:
    # RLockCore's own constructor: attaching to the cell, not making one.
    return RLockCore.__new__(cls, dupfd.detach())


def _rebuild(cls: type[Semaphore], dupfd: Any) -> Semaphore:
    # SyncCore's own constructor: attaching to an existing cell, not making one.
    return SyncCore.__new__(cls, 0, 0, dupfd.detach())
