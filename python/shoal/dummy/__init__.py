"""``shoal.dummy``: shoal's API on threads in this process, as ``multiprocessing.dummy``
is to ``multiprocessing``. Nothing is pickled; objects are shared as they are.

``Pool`` and ``Queue`` (also under the name ``JoinableQueue``: it has ``task_done`` and
``join``) are shoal's; the other names of ``multiprocessing.dummy`` (``Process``,
``current_process``, the locks, ``Value``, ``Array``, ``Manager``, ``Pipe``...) are that
module's own.

Example:
    >>> from shoal.dummy import Queue
    >>> q = Queue()
    >>> q.put_many([1, 2]); q.get_many()
    [1, 2]
    >>> from shoal import dummy
    >>> dummy.current_process().name, type(dummy.Lock()).__module__
    ('MainThread', '_thread')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal.dummy._pool import Pool
from shoal.dummy._queue import Queue

JoinableQueue = Queue

__all__ = [
    "Array",
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "JoinableQueue",
    "Lock",
    "Manager",
    "Namespace",
    "Pipe",
    "Pool",
    "Process",
    "Queue",
    "RLock",
    "Semaphore",
    "Value",
    "active_children",
    "current_process",
    "freeze_support",
]

# Names that are multiprocessing.dummy's own (thread objects already).
_AS_IN_DUMMY = frozenset(__all__) - {"JoinableQueue", "Pool", "Queue"}

if TYPE_CHECKING:
    from multiprocessing.dummy import (
        Array,
        Barrier,
        BoundedSemaphore,
        Condition,
        Event,
        Lock,
        Manager,
        Namespace,
        Pipe,
        Process,
        RLock,
        Semaphore,
        Value,
        active_children,
        current_process,
        freeze_support,
    )


def __getattr__(name: str) -> Any:
    if name not in _AS_IN_DUMMY:
        raise AttributeError(f"module 'shoal.dummy' has no attribute {name!r}")
    import multiprocessing.dummy

    value = getattr(multiprocessing.dummy, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_AS_IN_DUMMY})
