"""Pickling what a pool's new workers start with: the initializer and its arguments.

Unlike a task's message, this pickle is read by processes that do not exist yet, and it may
carry objects that hold descriptors: ``multiprocessing``'s queues, pipes, ``Value`` and
``Array`` (their shared memory), sockets, ``shoal.Queue`` and shoal's locks. While it is
made, a stand-in for multiprocessing's "process being started" collects each descriptor,
and every worker is started with copies of them (``shoal._process.worker.InheritedFd``), so
these objects reach every worker, replacements included, as they reach a child process
that multiprocessing starts.

One kind of object cannot travel that way: a lock, semaphore, condition, event or queue
of multiprocessing's ``fork`` context (the default on Linux before Python 3.14) is removed
from the system as it is made and exists only in processes forked from its creator.
:func:`dumps_for_workers` raises :class:`ForkOnly` for it; the pool then forks its workers
from its own process instead (``shoal._process.launch.WorkerSetup``).
"""

from __future__ import annotations

import multiprocessing.context
import os
import sys
from collections import ChainMap
from collections.abc import Iterator, Mapping
from multiprocessing.reduction import ForkingPickler
from typing import Any, ClassVar

from shoal._process.worker import InheritedFd
from shoal._wire.pickling import _PROTOCOL, _CloudPickler, pickling_error

__all__ = ["FdCollector", "ForkOnly", "dumps_for_workers", "resource_tracker_fd"]


class ForkOnly(Exception):
    """``obj`` exists only in processes forked from the one that made it."""

    def __init__(self, obj: object) -> None:
        super().__init__(obj)
        self.obj = obj


class FdCollector:
    """Stands in for multiprocessing's "process being started" while the initializer's
    arguments are pickled: objects that pass a descriptor to a new child hand it here, and
    the worker gets it at start (``shoal._process.worker.InheritedFd``)."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def forget_since(self, count: int) -> None:
        """Closes the descriptors collected after the first ``count`` (a pickle that
        failed half-way took them)."""
        while len(self.fds) > count:
            os.close(self.fds.pop())

    def duplicate_for_child(self, fd: int) -> int:
        """multiprocessing's hook: keeps a duplicate of ``fd`` for the workers; its index."""
        self.fds.append(os.dup(fd))
        return len(self.fds) - 1

    def DupFd(self, index: int) -> InheritedFd:
        """multiprocessing's hook: what a pickled descriptor becomes in the worker."""
        return InheritedFd(index)


def _fork_only(obj: object) -> bool:
    synchronize = sys.modules.get("multiprocessing.synchronize")
    return (
        synchronize is not None
        and isinstance(obj, synchronize.SemLock)
        and bool(getattr(obj, "_is_fork_ctx", False))
    )


class _Registered(Mapping[type, Any]):
    """The reducers registered with ``multiprocessing.reduction.register`` (read at each
    lookup: modules register theirs when imported), but for types cloudpickle handles."""

    def __init__(self, skip: Mapping[type, Any]) -> None:
        self._skip = skip

    def _table(self) -> dict[type, Any]:
        extra: dict[type, Any] = vars(ForkingPickler)["_extra_reducers"]
        return extra

    def __getitem__(self, cls: type) -> Any:
        if cls in self._skip:
            raise KeyError(cls)
        return self._table()[cls]

    def __iter__(self) -> Iterator[type]:
        return (cls for cls in self._table() if cls not in self._skip)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _WorkerPickler(_CloudPickler):
    """shoal's cloudpickle pickler with the reducers multiprocessing registered (those of
    shared memory, connections and sockets pass descriptors, which the collector takes),
    stopping at the first object that only forking can carry."""

    dispatch_table: ClassVar[ChainMap[type, Any]] = ChainMap(
        _CloudPickler.dispatch_table.maps[0],
        # (ChainMap writes only to its first map: a read-only one is safe here.)
        _Registered(_CloudPickler.dispatch_table),  # type: ignore[arg-type]
        *_CloudPickler.dispatch_table.maps[1:],
    )

    def reducer_override(self, obj: object) -> Any:
        if _fork_only(obj):
            raise ForkOnly(obj)
        return super().reducer_override(obj)


def dumps_for_workers(obj: object, collector: FdCollector) -> bytes:
    """Pickles ``obj`` for workers not started yet; descriptors go to ``collector``.

    Raises:
        ForkOnly: ``obj`` holds an object that exists only in processes forked from this
            one (the first such object is ``ForkOnly.obj``).
        shoal.errors.PicklingError: ``obj`` cannot be sent; the error names the part.
    """
    import io

    multiprocessing.context.set_spawning_popen(collector)  # type: ignore[arg-type]
    try:
        failure: BaseException | None = None
        start = len(collector.fds)
        # Then once more, leaving out the functions' globals that cannot be pickled (as
        # dumps_callable does).
        for lenient in (False, True):
            with io.BytesIO() as file:
                pickler = _WorkerPickler(file, protocol=_PROTOCOL)
                pickler.lenient = lenient
                try:
                    pickler.dump(obj)
                except (ForkOnly, MemoryError):
                    raise
                except Exception as exc:
                    failure = failure or exc
                    collector.forget_since(start)
                else:
                    return file.getvalue()
        assert failure is not None
        raise pickling_error(obj, failure, _WorkerPickler) from failure
    finally:
        multiprocessing.context.set_spawning_popen(None)


def resource_tracker_fd() -> int | None:
    """A duplicate of the descriptor that reaches this process's multiprocessing resource
    tracker, started if it was not, as multiprocessing does for each child it spawns:
    the workers register what they attach (``SharedMemory(name=...)``) with it, so that
    no tracker of their own unlinks the program's shared memory when they exit. ``None``
    if it cannot be started (the workers then start their own when they need one)."""
    from multiprocessing import resource_tracker

    try:
        fd = resource_tracker.getfd()
        return None if fd is None else os.dup(fd)
    except Exception:
        return None
