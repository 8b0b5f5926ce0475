"""``shoal.dummy.Pool``: the Pool on the thread backend, as ``multiprocessing.dummy.Pool``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from shoal.pool._pool import Pool as _Pool

__all__ = ["Pool"]


class Pool(_Pool):
    """``shoal.Pool(backend="thread")``: workers are threads of this process, so any
    callable works and nothing is pickled.

    Example:
        >>> from shoal.dummy import Pool
        >>> with Pool(2) as pool:
        ...     pool.map(lambda x: x * 2, range(4))
        [0, 2, 4, 6]
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        *,
        chunksize: int | None = None,
        worker_exit: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            backend="thread",
            chunksize=chunksize,
            worker_exit=worker_exit,
        )
