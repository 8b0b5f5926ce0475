"""``shoal.Lock``, ``shoal.Semaphore`` and ``shoal.BoundedSemaphore``: multiprocessing's
primitives in a memfd segment of their own, that a killed holder never wedges.

A process that finds a ``Lock`` held by a process that has died takes it over: ``acquire``
returns ``True`` as usual, ``owner_died`` is then true on that handle, and an
``OwnerDiedWarning`` says that what the lock protects may be half-updated.
"""

from __future__ import annotations

import multiprocessing.context
import warnings
from multiprocessing.reduction import DupFd
from typing import Any

from shoal._shoal import SyncCore

__all__ = ["BoundedSemaphore", "Lock", "OwnerDiedWarning", "Semaphore"]

_TAKEN_OVER = 2


class OwnerDiedWarning(RuntimeWarning):
    """A lock was taken over from a process that died holding it.

    Example:
        >>> issubclass(OwnerDiedWarning, RuntimeWarning)
        True
    """


def _timeout(block: bool, timeout: float | None) -> float | None:
    if not block:
        return 0.0
    return None if timeout is None else max(timeout, 0.0)


class Semaphore:
    """A counter shared between processes, with ``multiprocessing.Semaphore``'s API.

    Example:
        >>> from shoal._sync import Semaphore
        >>> s = Semaphore(2)
        >>> s.acquire(), s.acquire(), s.acquire(timeout=0)
        (True, True, False)
        >>> s.release(); s.get_value()
        1
    """

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._core = SyncCore(value, self._max_for(value))
        self.owner_died = False

    def _max_for(self, value: int) -> int:
        return 0

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Takes one unit, waiting while there is none (up to ``timeout`` seconds)."""
        got = self._core.acquire(_timeout(block, timeout))
        self.owner_died = got == _TAKEN_OVER
        if self.owner_died:
            try:
                warnings.warn(
                    "the previous holder of this lock died holding it; what it protects "
                    "may be half-updated",
                    OwnerDiedWarning,
                    stacklevel=2,
                )
            except BaseException:
                self.release()  # warnings are errors here: do not keep the lock
                raise
        return got != 0

    def release(self) -> None:
        """Gives one unit back; ``ValueError`` past a bounded maximum."""
        if not self._core.release():
            raise ValueError("semaphore or lock released too many times")

    def get_value(self) -> int:
        """The units available now (a snapshot)."""
        return self._core.value()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if multiprocessing.context.get_spawning_popen() is None:
            raise RuntimeError(
                f"{type(self).__name__} objects should only be shared between processes "
                "through inheritance"
            )
        return (_rebuild, (type(self), DupFd(self._core.fileno())))


class BoundedSemaphore(Semaphore):
    """A ``Semaphore`` whose ``release`` raises ``ValueError`` past its initial value.

    Example:
        >>> from shoal._sync import BoundedSemaphore
        >>> s = BoundedSemaphore(1)
        >>> s.release()
        Traceback (most recent call last):
        ValueError: semaphore or lock released too many times
    """

    def _max_for(self, value: int) -> int:
        return max(value, 1)


class Lock(BoundedSemaphore):
    """A process-shared lock, with ``multiprocessing.Lock``'s API; a holder that dies never
    wedges the others (see the module's docstring).

    Example:
        >>> from shoal._sync import Lock
        >>> lock = Lock()
        >>> with lock:
        ...     lock.acquire(timeout=0)
        False
    """

    def __init__(self) -> None:
        super().__init__(1)


def _rebuild(cls: type[Semaphore], dupfd: Any) -> Semaphore:
    self = cls.__new__(cls)
    self._core = SyncCore.from_fd(dupfd.detach())
    self.owner_died = False
    return self
