"""``shoal.current_worker()``: the worker a task or initializer runs in, with a ``state``
dict that lives as long as that worker.

Loading a model once per worker, with no global::

    def load():
        shoal.current_worker().state["model"] = expensive_load()

    def predict(x):
        return shoal.current_worker().state["model"](x)

    with shoal.Pool(4, initializer=load) as pool:
        pool.map(predict, inputs)

A worker's ``index`` runs from 0 to ``processes - 1`` and is reused by the worker that
replaces it (after ``maxtasksperchild``, a crash or a timeout); the replacement starts
with an empty ``state``. On the process backend a worker is a process; on the thread
backend a thread. The cluster backends (Dask, Ray) share their workers between pools,
so there is no per-pool worker to name and ``current_worker()`` raises there.

Example:
    >>> import shoal
    >>> def visit(_):
    ...     state = shoal.current_worker().state
    ...     state["calls"] = state.get("calls", 0) + 1
    ...     return shoal.current_worker().index
    >>> with shoal.Pool(2, backend="thread") as pool:
    ...     sorted(set(pool.map(visit, range(20), chunksize=1))) <= [0, 1]
    True
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Worker", "current_worker"]


@dataclass(frozen=True)
class Worker:
    """One worker of a pool, as :func:`current_worker` returns it.

    Attributes:
        index: 0 to ``processes - 1``, stable for the worker's life and reused by its
            replacement.
        pid: the worker's process id (on the thread backend, the pool's own).
        state: anything the worker's tasks and initializer keep; it starts empty and
            lives as long as the worker.
    """

    index: int
    pid: int
    state: dict[str, Any] = field(default_factory=dict, compare=False)


_process_worker: Worker | None = None
_thread_worker = threading.local()


def current_worker() -> Worker:
    """The worker running the calling task or initializer; ``RuntimeError`` anywhere
    else (the pool's own process, or a cluster backend's worker)."""
    worker: Worker | None = getattr(_thread_worker, "worker", None) or _process_worker
    if worker is None:
        raise RuntimeError(
            "shoal.current_worker() was called outside a shoal worker: call it inside a "
            "task or an initializer of a Pool on the process or thread backend"
        )
    return worker


def become_process_worker(index: int) -> None:
    """Makes this process worker ``index`` (called once, as it starts)."""
    global _process_worker
    _process_worker = Worker(index, os.getpid())


def become_thread_worker(index: int) -> None:
    """Makes the calling thread worker ``index`` of a thread pool."""
    _thread_worker.worker = Worker(index, os.getpid())


def leave_thread_worker() -> None:
    """The calling thread is no worker any more."""
    _thread_worker.worker = None


class IndexPool:
    """The indexes of a pool's workers: the lowest free one for each new worker.

    >>> indexes = IndexPool()
    >>> indexes.take(), indexes.take(), indexes.give_back(0), indexes.take()
    (0, 1, None, 0)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[int] = set()

    def take(self) -> int:
        with self._lock:
            index = 0
            while index in self._taken:
                index += 1
            self._taken.add(index)
            return index

    def give_back(self, index: int) -> None:
        with self._lock:
            self._taken.discard(index)
