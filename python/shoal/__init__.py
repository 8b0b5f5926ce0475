"""shoal: parallel Python that just works.

A drop-in for ``multiprocessing`` built on a Rust engine: ``shoal.Pool`` runs any
callable (lambdas and closures too) on worker processes, and ``shoal.Queue`` is a
shared-memory queue that any number of processes can put to and get from.

Example:
    >>> import shoal
    >>> with shoal.Pool(2) as pool:
    ...     pool.map(lambda x: x * x, range(5))
    [0, 1, 4, 9, 16]
    >>> q = shoal.Queue()
    >>> q.put("hello"); q.get()
    'hello'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are imported on first use, so that `import shoal` (and every worker process,
# which imports shoal's worker loop) loads only what it needs.
_HOMES = {
    "AsyncResult": "shoal.pool",
    "Executor": "shoal._executor",
    "Worker": "shoal._worker",
    "current_worker": "shoal._worker",
    "PoolStats": "shoal.pool._stats",
    "WorkerStats": "shoal.pool._stats",
    "SlowTask": "shoal.pool._stats",
    "InitializerError": "shoal.errors",
    "ProcessPoolExecutor": "shoal._executors",
    "ThreadPoolExecutor": "shoal._executors",
    "BoundedSemaphore": "shoal._sync",
    "Lock": "shoal._sync",
    "OwnerDiedWarning": "shoal._sync",
    "Semaphore": "shoal._sync",
    "Empty": "queue",
    "Full": "queue",
    "PicklingError": "shoal.errors",
    "ResultNotSentError": "shoal.errors",
    "Pool": "shoal.pool",
    "Queue": "shoal._queue",
    "RemoteTraceback": "shoal.pool",
    "ShoalError": "shoal.errors",
    "Shared": "shoal._shared",
    "TimeoutError": "shoal.pool",
    "TaskTimeoutError": "shoal.errors",
    "WorkerLostError": "shoal.errors",
    "cpu_count": "shoal.pool",
    "map": "shoal.pool",
    "shared": "shoal._shared",
    "SimpleQueue": "shoal._queue",
    "JoinableQueue": "shoal._joinable",
    "RLock": "shoal._sync",
    "Condition": "shoal._conditions",
    "Event": "shoal._conditions",
    "Barrier": "shoal._conditions",
    "Value": "shoal._sharedctypes",
    "Array": "shoal._sharedctypes",
    "RawValue": "shoal._sharedctypes",
    "RawArray": "shoal._sharedctypes",
    "get_context": "shoal._context",
    "set_start_method": "shoal._context",
}
# multiprocessing's own, as they are: they work with shoal's Pool and Queue.
_AS_IN_MULTIPROCESSING = frozenset(
    {
        "AuthenticationError",
        "BufferTooShort",
        "Manager",
        "Pipe",
        "Process",
        "ProcessError",
        "active_children",
        "allow_connection_pickling",
        "current_process",
        "freeze_support",
        "get_all_start_methods",
        "get_logger",
        "get_start_method",
        "log_to_stderr",
        "parent_process",
        "reducer",
        "set_executable",
        "set_forkserver_preload",
    }
)
# multiprocessing's submodules, reachable as attributes (``shoal.managers.BaseManager``).
_SUBMODULES = frozenset(
    {"connection", "managers", "shared_memory", "sharedctypes", "synchronize", "util"}
)

__all__ = [
    "Array",
    "AsyncResult",
    "AuthenticationError",
    "Barrier",
    "BoundedSemaphore",
    "BufferTooShort",
    "Condition",
    "Empty",
    "Event",
    "Executor",
    "Full",
    "InitializerError",
    "JoinableQueue",
    "Lock",
    "Manager",
    "OwnerDiedWarning",
    "PicklingError",
    "Pipe",
    "Pool",
    "PoolStats",
    "Process",
    "ProcessError",
    "ProcessPoolExecutor",
    "Queue",
    "RLock",
    "RawArray",
    "RawValue",
    "RemoteTraceback",
    "ResultNotSentError",
    "Semaphore",
    "Shared",
    "ShoalError",
    "SimpleQueue",
    "SlowTask",
    "TaskTimeoutError",
    "ThreadPoolExecutor",
    "TimeoutError",
    "Value",
    "Worker",
    "WorkerLostError",
    "WorkerStats",
    "active_children",
    "allow_connection_pickling",
    "cpu_count",
    "current_process",
    "current_worker",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "map",
    "parent_process",
    "reducer",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
    "shared",
]

if TYPE_CHECKING:
    from multiprocessing import (
        AuthenticationError,
        BufferTooShort,
        Manager,
        Pipe,
        Process,
        ProcessError,
        active_children,
        allow_connection_pickling,
        current_process,
        freeze_support,
        get_all_start_methods,
        get_logger,
        get_start_method,
        log_to_stderr,
        parent_process,
        reducer,
        set_executable,
        set_forkserver_preload,
    )
    from queue import Empty, Full

    from shoal._conditions import Barrier, Condition, Event
    from shoal._context import get_context, set_start_method
    from shoal._executor import Executor
    from shoal._executors import ProcessPoolExecutor, ThreadPoolExecutor
    from shoal._joinable import JoinableQueue
    from shoal._queue import Queue, SimpleQueue
    from shoal._shared import Shared, shared
    from shoal._sharedctypes import Array, RawArray, RawValue, Value
    from shoal._sync import BoundedSemaphore, Lock, OwnerDiedWarning, RLock, Semaphore
    from shoal._worker import Worker, current_worker
    from shoal.errors import (
        InitializerError,
        PicklingError,
        ResultNotSentError,
        ShoalError,
        TaskTimeoutError,
        WorkerLostError,
    )
    from shoal.pool import AsyncResult, Pool, RemoteTraceback, TimeoutError, cpu_count, map
    from shoal.pool._stats import PoolStats, SlowTask, WorkerStats


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        if name in _AS_IN_MULTIPROCESSING or name in _SUBMODULES:
            home = (
                "multiprocessing" if name in _AS_IN_MULTIPROCESSING else f"multiprocessing.{name}"
            )
            value = importlib.import_module(home)
            value = getattr(value, name) if name in _AS_IN_MULTIPROCESSING else value
            globals()[name] = value
            return value
        raise AttributeError(_missing(name))
    if name in ("Pool", "map"):  # (once each: the name is cached below)
        # A program about to make a pool: its default backend gets ready (the process
        # backend boots its zygote) while the pool's modules load here.
        from shoal.backends import DEFAULT_BACKEND, prepare

        prepare(DEFAULT_BACKEND)
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def _missing(name: str) -> str:
    """What to say of a name shoal lacks: where multiprocessing has it, if it does."""
    message = f"module 'shoal' has no attribute {name!r}"
    if name.startswith("_"):
        return message
    for module in ("pool", "managers", "connection", "shared_memory", "queues", "util"):
        if hasattr(importlib.import_module(f"multiprocessing.{module}"), name):
            where = "shoal.pool" if module == "pool" and name in _POOL_NAMES else None
            if where is not None:
                return f"{message}; it is {where}.{name}"
            return (
                f"{message}; it is multiprocessing.{module}.{name}, which shoal does not "
                f"replace: import it from there (it works with shoal's Pool and Queue)"
            )
    return message


_POOL_NAMES = frozenset({"ThreadPool", "ApplyResult", "MapResult", "IMapIterator"})


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES, *_AS_IN_MULTIPROCESSING})


__version__ = "0.1.0"
