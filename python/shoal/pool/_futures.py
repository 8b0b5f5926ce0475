"""``Pool.submit``'s ``concurrent.futures.Future``, and the target that feeds it (as
``_results`` describes targets)."""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import FINISHED as _FINISHED
from concurrent.futures._base import PENDING as _PENDING
from concurrent.futures._base import RUNNING as _RUNNING

# (Public in multiprocessing.pool, though its stubs leave it out.)
from typing import Any, Generic, TypeVar

from shoal.backends.base import Failure
from shoal.pool._results import Withdrawer, remote_exception

__all__ = ["FutureTarget", "PoolFuture"]

R = TypeVar("R")


class PoolFuture(Future[R]):
    """The ``concurrent.futures.Future`` that ``Pool.submit`` returns. It stays pending
    until its task's result arrives or a ``cancel`` finds the task already given to a
    worker; ``cancel`` takes the task back from wherever it waits (the Pool's queue or
    the engine's), so a cancelled task never runs.

    Example:
        >>> import shoal, time
        >>> with shoal.Pool(1) as pool:
        ...     busy = pool.submit(time.sleep, 0.5)
        ...     queued = [pool.submit(pow, 2, n) for n in range(200)]
        ...     queued[-1].cancel(), queued[0].result(timeout=10)
        (True, 1)
    """

    def __init__(self, pool: Withdrawer | None = None) -> None:
        super().__init__()
        self._pool = pool
        self._chunk_id: int | None = None  # set when the task goes out to the backend

    def __await__(self) -> Generator[Any, None, R]:
        """``await future`` in a coroutine (``asyncio.wrap_future``: no thread waits);
        cancelling the awaiting task cancels the future, which takes back a task no
        worker has started.

        >>> import asyncio, shoal
        >>> async def main(pool):
        ...     return await pool.submit(divmod, 9, 4)
        >>> with shoal.Pool(1) as pool:
        ...     asyncio.run(main(pool))
        (2, 1)
        """
        import asyncio

        return asyncio.wrap_future(self).__await__()

    def cancel(self) -> bool:
        """Cancels the task if no worker has started it (it then never runs) and returns
        True; otherwise marks the future running, if it is not done, and returns False."""
        if self._pool is None or self.done():
            return super().cancel()
        if self._pool.withdraw(self._chunk_id, super().cancel):
            # Nobody will run it: waiters (concurrent.futures.wait, as_completed) are
            # told now, as an executor tells them when it reaches a cancelled item.
            _mark_running(self)
            return True
        _mark_running(self)  # pending: now known to be running
        return False

    def _stop(self) -> None:
        """The pool was terminated: the task will never finish, so the future ends
        cancelled (``cancelled()``, ``done()``; ``result()`` and ``exception()`` raise
        ``CancelledError``), even if a worker had started it."""
        with self._condition:
            if self._state == _RUNNING:
                # Future.cancel() refuses a running future; this one's task is gone.
                self._state = _PENDING
        if super().cancel():
            _mark_running(self)


def _mark_running(future: Future[Any]) -> bool:
    """``future.set_running_or_notify_cancel()`` for a future that may have been marked
    running or have ended already (a late ``cancel``, a result racing ``terminate``),
    where that call logs a critical error and raises: False if it is cancelled."""
    with future._condition:  # (re-entrant)
        state = future._state
        if state in (_RUNNING, _FINISHED):
            return True
        return future.set_running_or_notify_cancel()


class FutureTarget(Generic[R]):
    """Feeds a :class:`PoolFuture` and lets it take its task back."""

    def __init__(self, future: PoolFuture[R]) -> None:
        self.future = future

    def _wants_more(self) -> bool:
        return not self.future.done()

    def _result(self) -> object:
        return self.future

    def _handed_over(self, chunk_id: int) -> None:
        self.future._chunk_id = chunk_id

    # A result and terminate() can race to settle the future; the first one wins.
    def _deliver(self, start: int, values: list[Any], failures: dict[int, Failure]) -> None:
        future = self.future
        if not _mark_running(future):
            return  # cancelled (too late to take back, but nobody wants it)
        with contextlib.suppress(InvalidStateError):
            if failures:
                future.set_exception(remote_exception(failures[0]))
            else:
                future.set_result(values[0])

    def _set_length(self, length: int) -> None:
        """Nothing to do: one task."""

    def _set_source_error(self, index: int, exc: BaseException) -> None:
        with contextlib.suppress(InvalidStateError):
            self.future.set_exception(exc)

    def _cancel(self) -> None:
        self.future._stop()
