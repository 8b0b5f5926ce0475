"""What runs on a Dask worker for ``backend="dask"``: a chunk's task, with the
``shoal.shared`` objects it names made ready first, and the task that holds a large
function pickle. A worker process outlives pools: it keeps the last shared objects'
handles (``KEEP``), fetching one it was not given from the cluster.

Example, the task of a large function pickle, which only hands its bytes on:
    >>> identity(b"pickle")
    b'pickle'
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Final

from shoal.backends._cluster.dask_session import distributed_module
from shoal.backends._cluster.remote import run_remote
from shoal.backends._cluster.shipping import KEEP

__all__ = ["identity", "run_with_shared", "shared_from_cluster"]


def identity(blob: bytes) -> bytes:
    """The task that holds a job's large function pickle: Dask keeps its result on the
    workers and runs it again if they die."""
    return blob


def shared_from_cluster(key: str) -> Any:
    """On a Dask worker: a ``shoal.shared`` handle over the object the pool scattered to
    every worker (once per worker process; a worker that joined later fetches it)."""
    from shoal._wire.shared import stand_in

    with _shared_lock:
        handle = _shared_here.get(key)
        if handle is None:
            distributed = distributed_module()
            worker = distributed.get_worker()
            if key in worker.data:
                value = worker.data[key]
            else:
                client = distributed.get_client()
                # (A task names its objects as dependencies, so this is rare: never for
                # ever, though, should the object be gone.)
                value = client.gather(distributed.Future(key, client), timeout=_FETCH_TIMEOUT)
            handle = _shared_here[key] = stand_in(value, (shared_from_cluster, (key,)))
            while len(_shared_here) > KEEP:
                _shared_here.popitem(last=False)
        return handle


_shared_here: OrderedDict[str, Any] = OrderedDict()
# Seconds a worker waits for a shared object it was not given with its task.
_FETCH_TIMEOUT: Final = 120
_shared_lock = threading.Lock()


def run_with_shared(shared: dict[str, Any], *args: Any) -> Any:
    """On a Dask worker: ``run_remote(*args)``, with the ``shoal.shared`` objects its task
    names (``shared``: Dask resolved each to its value before it ran) ready for
    :func:`shared_from_cluster`."""
    from shoal._wire.shared import stand_in

    with _shared_lock:
        for key, value in shared.items():
            if key not in _shared_here:
                _shared_here[key] = stand_in(value, (shared_from_cluster, (key,)))
        while len(_shared_here) > KEEP:
            _shared_here.popitem(last=False)
    return run_remote(*args)
