"""How the cluster backends send a job's function (or a pool's initializer): pickled once
per job, keyed by its pickle so that a function many jobs use goes once, riding inside
each task when small and stored on the cluster once when large.

A small pickle rides in the task because a stored one costs each worker a round trip (to
resolve a Ray reference) or biases the scheduler toward the worker holding it (Dask).

Example, with a "cluster" that stores objects in a list:
    >>> stored = []
    >>> functions = Functions(lambda blob: stored.append(blob) or len(stored) - 1)
    >>> key, payload = functions.for_job(0, abs, lambda handle: None)
    >>> isinstance(payload, bytes), stored
    (True, [])
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from shoal._wire.shared import Shared, placing

__all__ = ["INLINE_BYTES", "KEEP", "Functions", "Shipped"]

INLINE_BYTES: Final = 64 * 1024
"""Pickles up to this size ride in each task; larger ones are stored once."""

KEEP: Final = 64
"""How many recent jobs, and stored pickles, are remembered (per pool, and per cluster
worker process for what it unpickled)."""

Shipped = tuple[str, Any]
"""A function as sent: its pickle's key, and the pickle itself or what the cluster
stored it as (a Ray reference, a Dask future)."""

Placer = Callable[[Shared[Any]], tuple[Any, tuple[Any, ...]]]


class Functions:
    """Pickles shipped by one pool; not thread-safe (the backend holds its lock)."""

    def __init__(self, store: Callable[[bytes], Any]) -> None:
        self._store = store
        self._jobs: OrderedDict[int, Shipped] = OrderedDict()
        self._stored: OrderedDict[str, Any] = OrderedDict()

    def for_job(self, job_id: int, fn: Any, place: Placer) -> Shipped:
        """``fn`` as shipped for job ``job_id`` (pickled on the job's first chunk, with
        ``shoal.shared`` handles reduced by ``place``)."""
        shipped = self._jobs.get(job_id)
        if shipped is None:
            from shoal._wire.pickling import dumps_callable

            with placing(place):
                shipped = self._jobs[job_id] = self.blob(dumps_callable(fn))
            while len(self._jobs) > KEEP:
                self._jobs.popitem(last=False)
        return shipped

    def blob(self, blob: bytes) -> Shipped:
        """``blob`` as shipped: itself when small, else stored once per distinct pickle."""
        key = hashlib.blake2b(blob, digest_size=16).hexdigest()
        if len(blob) <= INLINE_BYTES:
            return key, blob
        stored = self._stored.get(key)
        if stored is None:
            stored = self._store(blob)
        self._stored[key] = stored
        self._stored.move_to_end(key)
        while len(self._stored) > KEEP:
            self._stored.popitem(last=False)
        return key, stored

    def stored(self) -> int:
        """How many large pickles are stored on the cluster now."""
        return len(self._stored)

    def clear(self) -> None:
        """Lets go of everything (the pool has ended)."""
        self._jobs.clear()
        self._stored.clear()
