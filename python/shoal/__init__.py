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

from queue import Empty, Full

from shoal._queue import Queue
from shoal.errors import PicklingError, ShoalError, WorkerLostError
from shoal.pool import AsyncResult, Pool, RemoteTraceback, TimeoutError, cpu_count, map

__all__ = [
    "AsyncResult",
    "Empty",
    "Full",
    "PicklingError",
    "Pool",
    "Queue",
    "RemoteTraceback",
    "ShoalError",
    "TimeoutError",
    "WorkerLostError",
    "cpu_count",
    "map",
]
__version__ = "0.1.0"
