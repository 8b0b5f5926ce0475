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

# How the package is built, from the bottom up (each layer imports only those below it):
#   shoal._shoal     the Rust engine's bindings: shared memory, queues, locks, the supervisor
#   shoal._wire      what crosses between processes, and all that a worker loads to read it:
#                    pickling, large buffers, shared objects (shoal.shared)
#   shoal._mp        multiprocessing's objects on the engine: queues, locks, conditions,
#                    shared ctypes, contexts
#   shoal.backends   where a pool's chunks run: the protocol, and thread, process (its
#                    workers' machinery in shoal._process), dask, ray
#   shoal.pool       the Pool front-end, its results and its doors (concurrent.futures,
#                    asyncio, progress bars)
#   shoal, shoal.dummy, shoal.joblib, shoal.errors: what users import.
#
# The public names and where each lives. Each is imported on first use, so that
# `import shoal` (and every worker process, which imports shoal's worker loop) loads only
# what it needs; the type checkers' view of the same names is under TYPE_CHECKING below.
_HOMES = {
    # The Pool, its results and its doors
    "AsyncResult": "shoal.pool",
    "Pool": "shoal.pool",
    "RemoteTraceback": "shoal.pool",
    "TimeoutError": "shoal.pool",
    "cpu_count": "shoal.pool",
    "map": "shoal.pool",
    "PoolStats": "shoal.pool._stats",
    "SlowTask": "shoal.pool._stats",
    "WorkerStats": "shoal.pool._stats",
    "Executor": "shoal.pool._executor",
    "ProcessPoolExecutor": "shoal.pool._drop_in_executors",
    "ThreadPoolExecutor": "shoal.pool._drop_in_executors",
    "Worker": "shoal._current_worker",
    "current_worker": "shoal._current_worker",
    "Shared": "shoal._wire.shared",
    "shared": "shoal._wire.shared",
    # multiprocessing's objects, shoal's own
    "Queue": "shoal._mp.queues",
    "SimpleQueue": "shoal._mp.queues",
    "JoinableQueue": "shoal._mp.joinable",
    "BoundedSemaphore": "shoal._mp.locks",
    "Lock": "shoal._mp.locks",
    "OwnerDiedWarning": "shoal._mp.locks",
    "RLock": "shoal._mp.locks",
    "Semaphore": "shoal._mp.locks",
    "Barrier": "shoal._mp.conditions",
    "Condition": "shoal._mp.conditions",
    "Event": "shoal._mp.conditions",
    "Array": "shoal._mp.sharedctypes",
    "RawArray": "shoal._mp.sharedctypes",
    "RawValue": "shoal._mp.sharedctypes",
    "Value": "shoal._mp.sharedctypes",
    "Process": "shoal._mp.process",
    "Manager": "shoal._mp.managers",
    "get_context": "shoal._mp.context",
    "set_start_method": "shoal._mp.context",
    # Errors
    "Empty": "queue",
    "Full": "queue",
    "InitializerError": "shoal.errors",
    "PicklingError": "shoal.errors",
    "ResultNotSentError": "shoal.errors",
    "ShoalError": "shoal.errors",
    "TaskTimeoutError": "shoal.errors",
    "WorkerLostError": "shoal.errors",
    # multiprocessing's own, as they are: they work with shoal's Pool and Queue.
    "AuthenticationError": "multiprocessing",
    "BufferTooShort": "multiprocessing",
    "Pipe": "multiprocessing",
    "ProcessError": "multiprocessing",
    "active_children": "multiprocessing",
    "allow_connection_pickling": "multiprocessing",
    "current_process": "multiprocessing",
    "freeze_support": "multiprocessing",
    "get_all_start_methods": "multiprocessing",
    "get_logger": "multiprocessing",
    "get_start_method": "multiprocessing",
    "log_to_stderr": "multiprocessing",
    "parent_process": "multiprocessing",
    "reducer": "multiprocessing",
    "set_executable": "multiprocessing",
    "set_forkserver_preload": "multiprocessing",
}
# Submodules named as multiprocessing's (shoal.synchronize, shoal.managers...), with shoal's
# objects where shoal has its own; like the names above, loaded on first use.
_SUBMODULES = frozenset(
    {
        "connection",
        "context",
        "dummy",
        "forkserver",
        "heap",
        "managers",
        "pool",
        "process",
        "queues",
        "reduction",
        "resource_sharer",
        "resource_tracker",
        "shared_memory",
        "sharedctypes",
        "spawn",
        "synchronize",
        "util",
    }
)

__all__ = sorted(_HOMES)

if TYPE_CHECKING:
    from multiprocessing import (
        AuthenticationError as AuthenticationError,
    )
    from multiprocessing import (
        BufferTooShort as BufferTooShort,
    )
    from multiprocessing import (
        Pipe as Pipe,
    )
    from multiprocessing import (
        ProcessError as ProcessError,
    )
    from multiprocessing import (
        active_children as active_children,
    )
    from multiprocessing import (
        allow_connection_pickling as allow_connection_pickling,
    )
    from multiprocessing import (
        current_process as current_process,
    )
    from multiprocessing import (
        freeze_support as freeze_support,
    )
    from multiprocessing import (
        get_all_start_methods as get_all_start_methods,
    )
    from multiprocessing import (
        get_logger as get_logger,
    )
    from multiprocessing import (
        get_start_method as get_start_method,
    )
    from multiprocessing import (
        log_to_stderr as log_to_stderr,
    )
    from multiprocessing import (
        parent_process as parent_process,
    )
    from multiprocessing import (
        reducer as reducer,
    )
    from multiprocessing import (
        set_executable as set_executable,
    )
    from multiprocessing import (
        set_forkserver_preload as set_forkserver_preload,
    )
    from queue import (
        Empty as Empty,
    )
    from queue import (
        Full as Full,
    )

    from shoal._current_worker import (
        Worker as Worker,
    )
    from shoal._current_worker import (
        current_worker as current_worker,
    )
    from shoal._mp.conditions import (
        Barrier as Barrier,
    )
    from shoal._mp.conditions import (
        Condition as Condition,
    )
    from shoal._mp.conditions import (
        Event as Event,
    )
    from shoal._mp.context import (
        get_context as get_context,
    )
    from shoal._mp.context import (
        set_start_method as set_start_method,
    )
    from shoal._mp.joinable import (
        JoinableQueue as JoinableQueue,
    )
    from shoal._mp.locks import (
        BoundedSemaphore as BoundedSemaphore,
    )
    from shoal._mp.locks import (
        Lock as Lock,
    )
    from shoal._mp.locks import (
        OwnerDiedWarning as OwnerDiedWarning,
    )
    from shoal._mp.locks import (
        RLock as RLock,
    )
    from shoal._mp.locks import (
        Semaphore as Semaphore,
    )
    from shoal._mp.managers import (
        Manager as Manager,
    )
    from shoal._mp.process import (
        Process as Process,
    )
    from shoal._mp.queues import (
        Queue as Queue,
    )
    from shoal._mp.queues import (
        SimpleQueue as SimpleQueue,
    )
    from shoal._mp.sharedctypes import (
        Array as Array,
    )
    from shoal._mp.sharedctypes import (
        RawArray as RawArray,
    )
    from shoal._mp.sharedctypes import (
        RawValue as RawValue,
    )
    from shoal._mp.sharedctypes import (
        Value as Value,
    )
    from shoal._wire.shared import (
        Shared as Shared,
    )
    from shoal._wire.shared import (
        shared as shared,
    )
    from shoal.errors import (
        InitializerError as InitializerError,
    )
    from shoal.errors import (
        PicklingError as PicklingError,
    )
    from shoal.errors import (
        ResultNotSentError as ResultNotSentError,
    )
    from shoal.errors import (
        ShoalError as ShoalError,
    )
    from shoal.errors import (
        TaskTimeoutError as TaskTimeoutError,
    )
    from shoal.errors import (
        WorkerLostError as WorkerLostError,
    )
    from shoal.pool import (
        AsyncResult as AsyncResult,
    )
    from shoal.pool import (
        Pool as Pool,
    )
    from shoal.pool import (
        RemoteTraceback as RemoteTraceback,
    )
    from shoal.pool import (
        TimeoutError as TimeoutError,
    )
    from shoal.pool import (
        cpu_count as cpu_count,
    )
    from shoal.pool import (
        map as map,
    )
    from shoal.pool._drop_in_executors import (
        ProcessPoolExecutor as ProcessPoolExecutor,
    )
    from shoal.pool._drop_in_executors import (
        ThreadPoolExecutor as ThreadPoolExecutor,
    )
    from shoal.pool._executor import (
        Executor as Executor,
    )
    from shoal.pool._stats import (
        PoolStats as PoolStats,
    )
    from shoal.pool._stats import (
        SlowTask as SlowTask,
    )
    from shoal.pool._stats import (
        WorkerStats as WorkerStats,
    )


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        if name not in _SUBMODULES:
            raise AttributeError(_missing(name))
        value = importlib.import_module(f"shoal.{name}")
    else:
        if name in ("Pool", "map"):  # (once each: the name is cached below)
            # A program about to make a pool: its default backend gets ready (the process
            # backend boots its zygote) while the pool's modules load here.
            from shoal.backends import DEFAULT_BACKEND, prepare

            prepare(DEFAULT_BACKEND)
        value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def _missing(name: str) -> str:
    """What to say of a name shoal lacks: the submodule that has it, if one does (as
    multiprocessing keeps ``BaseManager`` in ``managers``)."""
    message = f"module 'shoal' has no attribute {name!r}"
    if name.startswith("_"):
        return message
    for module in ("pool", "managers", "connection", "shared_memory", "queues", "util"):
        if hasattr(importlib.import_module(f"multiprocessing.{module}"), name):
            return f"{message}; it is shoal.{module}.{name}"
    return message


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES, *_SUBMODULES})


__version__ = "0.1.0"
