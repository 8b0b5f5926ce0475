"""The process backend's workers as the Pool sees them: the running ones by engine id
(their handles, for ``Pool._pool``, and their indexes), each index's life for
``Pool.stats()``, and what ``worker_exit`` gave in those that left.

Example:
    >>> roster = WorkerRoster()
    >>> index = roster.take_index()
    >>> roster.started(worker=5, handle=WorkerHandle("ForkPoolWorker-1", 100), index=index)
    >>> roster.handles()
    [WorkerHandle(name='ForkPoolWorker-1', pid=100, exitcode=None)]
    >>> roster.ended(5, None, code=0, signal=None).exitcode
    0
"""

from __future__ import annotations

import threading
from typing import Any

from shoal._current_worker import IndexPool
from shoal._wire.failure import Failure
from shoal.backends._lives import RestartReason, WorkerLife, WorkerLives
from shoal.backends._records import WorkerExit, WorkerHandle

__all__ = ["WorkerRoster"]


class WorkerRoster:
    """Thread-safe: workers start in the submitting thread (or a timer's) and end in the
    events thread, while ``handles`` and ``exit_results`` are read from any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[int, WorkerHandle] = {}
        self._index_of: dict[int, int] = {}
        self._indexes = IndexPool()
        self._lives = WorkerLives()
        self._exits: list[WorkerExit] = []  # what worker_exit gave, as workers left

    def take_index(self) -> int:
        """The lowest free index, for a worker about to start."""
        return self._indexes.take()

    def give_back(self, index: int) -> None:
        """An index whose worker never started."""
        self._indexes.give_back(index)

    def started(
        self, worker: int, handle: WorkerHandle, index: int, launched: float | None = None
    ) -> None:
        """Worker ``worker`` (the engine's id) runs, at ``index``, since ``launched``."""
        with self._lock:
            self._handles[worker] = handle
            self._index_of[worker] = index
        self._lives.started(index, handle.pid, worker, launched)

    def ready(self, worker: int, when: float) -> None:
        """Worker ``worker`` finished its initializer at ``when``."""
        with self._lock:
            index = self._index_of.get(worker)
        if index is not None:
            self._lives.ready(index, when)

    def said_farewell(self, worker: int, value: Any, failure: Failure | None) -> None:
        """What ``worker_exit`` returned (or raised) in ``worker``, as it left."""
        with self._lock:
            self._exits.append(WorkerExit(self._index_of.get(worker, -1), value, failure))

    def ended(
        self, worker: int, reason: RestartReason | None, code: int | None, signal: int | None
    ) -> WorkerHandle | None:
        """Worker ``worker`` ended (with exit ``code`` or killed by ``signal``); ``reason``:
        why, when it is replaced. Its index is free for the replacement. Returns its
        handle, if it was known."""
        with self._lock:
            handle = self._handles.pop(worker, None)
            index = self._index_of.pop(worker, None)
        if index is not None:
            self._lives.ended(index, reason)
            self._indexes.give_back(index)
        if handle is not None:
            # multiprocessing's convention: the exit code, or minus the killing signal.
            handle.exitcode = code if code is not None else -signal if signal else 0
        return handle

    def handles(self) -> list[WorkerHandle]:
        """The workers running now: their names (as they call themselves), pids."""
        with self._lock:
            return list(self._handles.values())

    def exit_results(self) -> list[WorkerExit]:
        """What ``worker_exit`` gave in each worker that has left, in the order they left."""
        with self._lock:
            return list(self._exits)

    def lives(self) -> list[WorkerLife]:
        """Each worker index's life, for ``Pool.stats()``."""
        return self._lives.snapshot()
