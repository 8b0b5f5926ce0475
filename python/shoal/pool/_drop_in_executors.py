"""``ProcessPoolExecutor`` and ``ThreadPoolExecutor``: the standard executors' signatures
on :class:`shoal.Executor`, so that changing the import is the whole port.

Example:
    >>> from shoal import ThreadPoolExecutor
    >>> with ThreadPoolExecutor(2) as ex:
    ...     list(ex.map(len, ["a", "bc"]))
    [1, 2]
"""

from __future__ import annotations

import multiprocessing.context
import os
from collections.abc import Callable, Iterable
from typing import Any

from shoal.pool._executor import Executor

__all__ = ["ProcessPoolExecutor", "ThreadPoolExecutor"]


class ProcessPoolExecutor(Executor):
    """``concurrent.futures.ProcessPoolExecutor``'s signature on shoal's process workers:
    change the import and the program runs on shoal (any callable; a dead worker costs
    one future, never the executor). ``mp_context`` picks the start method (``fork``
    forks from the program; ``spawn`` and ``forkserver`` use shoal's zygote, which
    inherits nothing either).

    Example:
        >>> from shoal import ProcessPoolExecutor
        >>> with ProcessPoolExecutor(2) as ex:
        ...     sorted(ex.map(lambda x: x * x, range(4)))
        [0, 1, 4, 9]
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: multiprocessing.context.BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("backend", "process")
        if mp_context is not None and options["backend"] == "process":
            options.setdefault("context", mp_context)
        super().__init__(
            max_workers,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=max_tasks_per_child,
            **options,
        )


class ThreadPoolExecutor(Executor):
    """``concurrent.futures.ThreadPoolExecutor``'s signature on shoal's thread backend
    (``max_workers`` defaults as there: ``min(32, CPUs + 4)``), its threads named as
    there (``thread_name_prefix`` and ``_N``; by default ``ThreadPoolExecutor-M_N``).

    Example:
        >>> from shoal import ThreadPoolExecutor
        >>> with ThreadPoolExecutor() as ex:
        ...     ex.submit(str.upper, "hi").result(timeout=10)
        'HI'
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        **options: Any,
    ) -> None:
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        options.setdefault("backend", "thread")
        if thread_name_prefix and options["backend"] == "thread":
            options.setdefault("thread_name_prefix", thread_name_prefix)
        super().__init__(max_workers, initializer=initializer, initargs=initargs, **options)
