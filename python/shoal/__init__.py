"""shoal: parallel Python that just works.

A drop-in for ``multiprocessing`` built on a Rust engine: ``shoal.Queue`` is a
shared-memory queue that any number of processes can put to and get from.

Example:
    >>> import shoal
    >>> q = shoal.Queue()
    >>> q.put("hello"); q.get()
    'hello'
"""

from queue import Empty, Full

from shoal._queue import Queue
from shoal.errors import PicklingError, ShoalError
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
    "cpu_count",
    "map",
]
__version__ = "0.1.0"
