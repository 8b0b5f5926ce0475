"""The single calls of :class:`shoal.Pool`: ``apply``, ``apply_async`` and ``submit``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from shoal.pool._arguments import check_callable, check_timeout, single_call
from shoal.pool._core import PoolCore
from shoal.pool._futures import FutureTarget, PoolFuture
from shoal.pool._results import AsyncResult, get_or_abandon

__all__ = ["SingleCalls"]

R = TypeVar("R")
P = ParamSpec("P")

_EMPTY_KWDS: Mapping[str, Any] = {}


class SingleCalls:
    """The single calls of :class:`shoal.Pool`, which inherits them (its constructor sets
    the attributes below): each runs one call on a worker.

    Example:
        >>> import shoal
        >>> issubclass(shoal.Pool, SingleCalls)
        True
    """

    _core: PoolCore
    _task_timeout: float | None
    _retries: int

    def apply(
        self,
        func: Callable[..., R],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = _EMPTY_KWDS,
        *,
        task_timeout: float | None = None,
    ) -> R:
        """Calls ``func(*args, **kwds)`` on a worker and returns its result.
        ``task_timeout`` overrides the pool's for this call.

        >>> import shoal
        >>> with shoal.Pool(1) as pool:
        ...     pool.apply(pow, (2, 10))
        1024
        """
        return get_or_abandon(self.apply_async(func, args, kwds, task_timeout=task_timeout))

    def apply_async(
        self,
        func: Callable[..., R],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = _EMPTY_KWDS,
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
    ) -> AsyncResult[R]:
        """Like :meth:`apply` but returns an :class:`AsyncResult` at once. ``callback``
        gets the value, or ``error_callback`` the exception, on the pool's result thread
        before the result becomes ready; they should return quickly.

        >>> import shoal
        >>> with shoal.Pool(1) as pool:
        ...     pool.apply_async(max, (3, 9)).get(timeout=10)
        9
        """
        check_callable(func)
        # (A call's own limit, math.inf for none, or else the pool's.)
        timeout = self._task_timeout if task_timeout is None else check_timeout(task_timeout)
        result: AsyncResult[R] = AsyncResult(self, callback, error_callback)
        call, item = single_call(tuple(args), kwds)
        self._core.add_single(func, call, item, result, timeout, self._retries)
        return result

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> PoolFuture[R]:
        """Schedules ``fn(*args, **kwargs)`` and returns a ``concurrent.futures.Future``;
        cancelling the future before a worker takes the task skips it.

        >>> import shoal
        >>> with shoal.Pool(1) as pool:
        ...     pool.submit(sorted, [3, 1, 2], reverse=True).result(timeout=10)
        [3, 2, 1]
        """
        return self._submit(PoolFuture(self._core), fn, args, kwargs)

    def _submit(
        self,
        future: PoolFuture[R],
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> PoolFuture[R]:
        """``submit``'s work, feeding the given future (``shoal.Executor`` gives one of
        its own)."""
        check_callable(fn)
        call, item = single_call(args, kwargs)
        target = FutureTarget(future)
        self._core.add_single(fn, call, item, target, self._task_timeout, self._retries)
        return future
