"""``shoal.Pool`` and its results; ``shoal.map`` for the one-line case.

The Pool front-end (chunking, ordering, laziness, result objects) is the same for every
backend; ``shoal.backends`` says what runs the tasks.

Example:
    >>> import shoal
    >>> shoal.map(abs, [-1, 2, -3], processes=2)
    [1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from multiprocessing import TimeoutError
from typing import TYPE_CHECKING, Any, TypeVar

from shoal.pool._cpu import cpu_count
from shoal.pool._imap import IMapIterator
from shoal.pool._pool import Pool
from shoal.pool._results import AsyncResult, MapResult, RemoteTraceback

if TYPE_CHECKING:
    from shoal.dummy._pool import Pool as ThreadPool


def __getattr__(name: str) -> Any:
    # ThreadPool, on first use: shoal.dummy's Pool is built on this module's.
    if name != "ThreadPool":
        raise AttributeError(f"module 'shoal.pool' has no attribute {name!r}")
    from shoal.dummy._pool import Pool

    return Pool


# multiprocessing.pool's names for the same classes.
ApplyResult = AsyncResult
IMapUnorderedIterator = IMapIterator

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
    "Pool",
    "RemoteTraceback",
    "ThreadPool",
    "TimeoutError",
    "cpu_count",
    "map",
]

T = TypeVar("T")
R = TypeVar("R")


def map(
    fn: Callable[[T], R],
    iterable: Iterable[T],
    *,
    processes: int | None = None,
    chunksize: int | None = None,
    backend: str | None = None,
) -> list[R]:
    """``[fn(x) for x in iterable]`` on a pool made for the call and shut down after it.

    Args:
        processes: the number of workers (``None``: :func:`cpu_count`).
        chunksize: as for :meth:`Pool.map`.
        backend: as for :class:`Pool` (``None``: ``shoal.backends.DEFAULT_BACKEND``).

    >>> map(str.upper, ["a", "b"], backend="thread")
    ['A', 'B']
    """
    with Pool(processes, backend=backend) as pool:
        return pool.map(fn, iterable, chunksize)
