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
import sys
from typing import TYPE_CHECKING, Any

# Names are imported on first use, so that `import shoal` (and every worker process,
# which imports shoal's worker loop) loads only what it needs.
_HOMES = {
    "AsyncResult": "shoal.pool",
    "BoundedSemaphore": "shoal._sync",
    "Lock": "shoal._sync",
    "OwnerDiedWarning": "shoal._sync",
    "Semaphore": "shoal._sync",
    "Empty": "queue",
    "Full": "queue",
    "PicklingError": "shoal.errors",
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
}

__all__ = [
    "AsyncResult",
    "BoundedSemaphore",
    "Empty",
    "Full",
    "Lock",
    "OwnerDiedWarning",
    "PicklingError",
    "Pool",
    "Queue",
    "RemoteTraceback",
    "Semaphore",
    "Shared",
    "ShoalError",
    "TaskTimeoutError",
    "TimeoutError",
    "WorkerLostError",
    "cpu_count",
    "map",
    "shared",
]

if TYPE_CHECKING:
    from queue import Empty, Full

    from shoal._queue import Queue
    from shoal._shared import Shared, shared
    from shoal._sync import BoundedSemaphore, Lock, OwnerDiedWarning, Semaphore
    from shoal.errors import PicklingError, ShoalError, TaskTimeoutError, WorkerLostError
    from shoal.pool import AsyncResult, Pool, RemoteTraceback, TimeoutError, cpu_count, map


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    if home == "shoal.pool" and "shoal.pool" not in sys.modules:
        # The zygote boots in its own process while the pool's modules load here.
        from shoal.process.zygote import prestart

        prestart()
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__version__ = "0.1.0"
