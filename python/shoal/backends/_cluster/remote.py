"""What runs on a cluster's worker processes for the cluster backends (Dask, Ray): one
chunk at a time through :func:`run_remote`, the same way on every engine.

A cluster worker process outlives pools and jobs, so it remembers, per pool, whether it
ran that pool's initializer (and what it raised), and keeps the last jobs' functions
unpickled. Functions sent by value from one module share one namespace here, as in
shoal's own workers: what an initializer sets as a global, the tasks see.

Example, a chunk as a cluster worker runs it (here, in this process):
    >>> from shoal._wire.calls import CallKind
    >>> from shoal._wire.pickling import dumps_callable
    >>> one = CallKind.ONE.code
    >>> wire = run_remote("pool-1", None, "abs", dumps_callable(abs), 3, [-1, -2], one)
    >>> result = from_wire(wire)
    >>> result.chunk_id, result.values
    (3, [1, 2])
"""

from __future__ import annotations

import dataclasses
import os
import threading
import types
from collections import OrderedDict
from typing import Any, Final, cast

from shoal._wire.calls import BY_CODE
from shoal.backends._cluster.shipping import KEEP
from shoal.backends.base import Chunk, ChunkResult, Failure, all_failed, run_chunk

__all__ = ["Wire", "from_wire", "run_remote"]

Wire = tuple[int, list[Any], dict[int, Failure], float, int, str | None]
"""A :class:`ChunkResult` as the tuple of its fields, in the order the class declares
them: what a cluster task returns, because engines send a plain tuple of arrays as they
are (Dask pickles a dataclass holding 16 MiB arrays five times slower)."""

_FIELDS: Final = tuple(field.name for field in dataclasses.fields(ChunkResult))


def from_wire(wire: Wire) -> ChunkResult:
    """The :class:`ChunkResult` a cluster task returned as its fields.

    >>> from_wire((7, [1], {}, 0.5, 42, None)).values
    [1]
    """
    return ChunkResult(*wire)


_functions: OrderedDict[str, Any] = OrderedDict()
_initialized: dict[str, Failure | None] = {}
_lock = threading.Lock()
_sharing = False


def _share_namespaces() -> None:
    global _sharing
    if not _sharing:
        from shoal._wire.namespaces import share

        share(types.ModuleType("__main__"))
        _sharing = True


def _initialize(pool_key: str, init_blob: bytes | None) -> Failure | None:
    with _lock:
        _share_namespaces()
        if pool_key in _initialized:
            return _initialized[pool_key]
        broken: Failure | None = None
        if init_blob is not None:
            from shoal._wire.pickling import loads

            try:
                initializer, initargs = cast(tuple[Any, tuple[Any, ...]], loads(init_blob))
                initializer(*initargs)
            except Exception as exc:
                broken = Failure.capture(exc)
        _initialized[pool_key] = broken
        return broken


def _function(job_key: str, blob: bytes) -> Any:
    with _lock:
        fn = _functions.get(job_key)
        if fn is None:
            from shoal._wire.pickling import loads

            fn = _functions[job_key] = loads(blob)
            while len(_functions) > KEEP:
                _functions.popitem(last=False)
        return fn


def run_remote(
    pool_key: str,
    init_blob: bytes | None,
    job_key: str,
    fn_blob: bytes,
    chunk_id: int,
    items: list[Any] | bytes,
    call: int,
) -> Wire:
    """One chunk: the pool's initializer first if this process has not run it for that
    pool, then every task (``items`` may come pickled, by a backend that had to pickle
    them itself; ``call``: how, as a ``CallKind.code``). A failed initializer, or a
    function that cannot be unpickled here (a module the cluster lacks), fails every
    task of the chunk with its error; what cannot be pickled back becomes its task's
    error."""
    import cloudpickle  # type: ignore[import-untyped]

    from shoal._wire.pickling import _check
    from shoal.backends._sendable import make_sendable

    broken = _initialize(pool_key, init_blob)
    if broken is not None:
        return _wire(all_failed(chunk_id, len(items), broken, os.getpid()))
    try:
        fn = _function(job_key, fn_blob)
        if isinstance(items, bytes):
            from shoal._wire.pickling import loads

            items = cast(list[Any], loads(items))
    except Exception as exc:
        return _wire(all_failed(chunk_id, len(items), Failure.capture(exc), os.getpid()))
    result = run_chunk(Chunk(0, chunk_id, fn, items, BY_CODE[call]), worker=os.getpid())
    # A dry run (large buffers are not copied) finds what the engine could not send.
    if _check((result.values, result.failures)) is not None:
        make_sendable(result.values, result.failures, cloudpickle.dumps)
    return _wire(result)


def _wire(result: ChunkResult) -> Wire:
    return cast("Wire", tuple(getattr(result, name) for name in _FIELDS))
