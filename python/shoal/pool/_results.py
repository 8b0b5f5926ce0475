"""The objects a Pool hands back for calls it answers at once: ``AsyncResult`` and
``MapResult`` (the ``imap`` iterators are in ``_imap``, ``submit``'s futures in
``_futures``).

Every one of them is a *target* for the Pool's internals: the result thread calls
``_deliver`` with a chunk's values and failures, the feeder calls ``_set_length`` once the
input is exhausted (or ``_set_source_error`` if reading it failed), and ``terminate`` calls
``_cancel``. Each keeps its own lock; none calls into the Pool while holding it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from concurrent.futures import CancelledError
from multiprocessing import TimeoutError as MpTimeoutError

# (Public in multiprocessing.pool, though its stubs leave it out.)
from multiprocessing.pool import RemoteTraceback  # type: ignore[attr-defined]
from typing import Any, Generic, Protocol, TypeVar

from shoal.backends.base import Failure
from shoal.pool._progress import ProgressCounter

__all__ = [
    "TERMINATED",
    "AsyncResult",
    "MapResult",
    "RemoteTraceback",
    "Withdrawer",
    "get_or_abandon",
    "remote_exception",
    "report_callback_error",
]

R = TypeVar("R")

TERMINATED = "the pool was terminated before this task finished"


class Withdrawer(Protocol):
    """What a :class:`PoolFuture` asks to take its task back: the Pool's core."""

    def withdraw(self, chunk_id: int | None, cancel: Callable[[], bool]) -> bool: ...


# Settles the race between a result, terminate() and an interrupted wait to finish an
# AsyncResult first. Shared by all of them: it is held for a few instructions, and one
# lock per result would cost more to create than it would ever save.
_FINISHING = threading.Lock()


def remote_exception(failure: Failure) -> BaseException:
    """The exception to raise in the caller, with the worker's traceback as its cause: a
    ``multiprocessing.pool.RemoteTraceback`` spelled as multiprocessing spells it, so
    code written to catch or read one works unchanged.

    A cause the task set itself (``raise ... from ...``) is kept: it says more.
    """
    exc = failure.exception
    if exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(f'\n"""\n{failure.traceback}"""')
    return exc


def report_callback_error(exc: BaseException) -> None:
    """A raising callback must not kill the thread that delivers every other result, so
    its error goes where an uncaught thread exception goes, and delivery carries on."""
    threading.excepthook(
        threading.ExceptHookArgs((type(exc), exc, exc.__traceback__, threading.current_thread()))
    )


class AsyncResult(Generic[R]):
    """The result of ``apply_async`` or ``map_async``, as ``multiprocessing.pool.AsyncResult``.

    Example:
        >>> import shoal
        >>> with shoal.Pool(2) as pool:
        ...     result = pool.apply_async(divmod, (7, 2))
        ...     result.get(timeout=10), result.ready(), result.successful()
        ((3, 1), True, True)
    """

    # Slots, and a single lock of its own: a pool may create tens of thousands of these a
    # second, and each object less is less for the garbage collector to walk.
    __slots__ = (
        "_callback",
        "_chunk_id",
        "_error",
        "_error_callback",
        "_finishing",
        "_gate",
        "_keepalive",
        "_ready",
        "_value",
        "_wakers",
    )

    def __init__(
        self,
        keepalive: object,
        callback: Callable[[R], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        # Holding the pool keeps it (and its workers) alive while a result is pending,
        # even when the caller dropped every other reference, as multiprocessing does.
        self._keepalive: object = keepalive
        self._callback = callback
        self._error_callback = error_callback
        # Held until the outcome is in: a bare lock is a much cheaper gate to create than
        # a threading.Event.
        self._gate = threading.Lock()
        self._gate.acquire()
        self._ready = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._finishing = False
        self._chunk_id: int | None = None  # the chunk a single call went out as
        # Called once the outcome is in (an awaiting asyncio task's wake-up); None until
        # someone awaits, so that a result nobody awaits costs nothing more.
        self._wakers: list[Callable[[], object]] | None = None

    def __await__(self) -> Generator[Any, None, R]:
        """``await result`` in a coroutine: the value, or the task's exception. No thread
        waits for it (the pool's result thread wakes the event loop); cancelling the
        awaiting task takes back a call no worker has started.

        >>> import asyncio, shoal
        >>> async def main(pool):
        ...     return await pool.apply_async(pow, (2, 5))
        >>> with shoal.Pool(1) as pool:
        ...     asyncio.run(main(pool))
        32
        """
        from shoal.pool._aio import result_of

        return result_of(self).__await__()

    def ready(self) -> bool:
        """Whether the call has completed (successfully or not)."""
        return self._ready

    def successful(self) -> bool:
        """Whether the call completed without raising; ``ValueError`` if not ready yet."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None

    def wait(self, timeout: float | None = None) -> None:
        """Waits until the result is ready or ``timeout`` seconds have passed."""
        self._wait(timeout)

    def _wait(self, timeout: float | None) -> bool:
        if self._ready:
            return True
        if self._gate.acquire(True, -1 if timeout is None else max(timeout, 0.0)):
            self._gate.release()
        return self._ready

    def get(self, timeout: float | None = None) -> R:
        """Returns the result when it arrives, or raises the task's exception (with the
        worker's traceback as ``__cause__``). ``multiprocessing.TimeoutError`` if it is not
        ready within ``timeout`` seconds; ``concurrent.futures.CancelledError`` if the pool
        was terminated first."""
        if not self._wait(timeout):
            raise MpTimeoutError(f"no result within {timeout} seconds")
        if self._error is None:
            value: R = self._value
            return value
        try:
            raise self._error
        finally:
            # The error's traceback holds this frame: without ``self`` in it, the error
            # and this result (which holds it, and its pool) are not a reference cycle.
            del self

    def _finish(self, value: Any = None, error: BaseException | None = None) -> None:
        """Records the outcome once, runs the matching callback, then wakes waiters (so
        that ``get`` returns after the callback ran, as in multiprocessing)."""
        with _FINISHING:
            if self._finishing:
                return
            self._finishing = True
        self._value, self._error = value, error
        try:
            if error is None:
                if self._callback is not None:
                    self._callback(value)
            elif self._error_callback is not None and not isinstance(error, CancelledError):
                self._error_callback(error)
        except Exception as exc:
            report_callback_error(exc)
        self._keepalive = None
        self._ready = True
        self._gate.release()
        if self._wakers is not None:
            with _FINISHING:
                wakers, self._wakers = self._wakers, None
            for wake in wakers or ():
                wake()

    def _when_ready(self, wake: Callable[[], object]) -> None:
        """Calls ``wake()`` once the outcome is in: at once if it is, else from the
        thread that settles it."""
        with _FINISHING:
            if not self._ready:
                if self._wakers is None:
                    self._wakers = []
                self._wakers.append(wake)
                return
        wake()

    def _take_back(self) -> None:
        """Whoever awaited this result gave up (its asyncio task was cancelled): a call
        no worker has started is taken back and settles as cancelled, as a cancelled
        ``Future``'s is; one already running finishes, and nobody reads it."""
        core: Withdrawer | None = getattr(self._keepalive, "_core", None)
        if core is not None:
            core.withdraw(self._chunk_id, self._cancelled_by_caller)

    def _cancelled_by_caller(self) -> bool:
        self._finish(error=CancelledError("the caller stopped waiting for this result"))
        return True

    def _wants_more(self) -> bool:
        return not self._finishing

    def _result(self) -> object:
        return self

    def _handed_over(self, chunk_id: int) -> None:
        self._chunk_id = chunk_id

    def _abandon(self) -> None:
        """The caller stopped waiting (Ctrl-C): settle as cancelled, so the Pool drops
        the tasks it has not handed out yet."""
        self._cancelled_by_caller()

    def _set_length(self, length: int) -> None:
        """Nothing to do: the length was known from the start."""

    def _set_source_error(self, index: int, exc: BaseException) -> None:
        self._finish(error=exc)

    def _cancel(self) -> None:
        self._finish(error=CancelledError(TERMINATED))

    def _deliver(self, start: int, values: list[Any], failures: dict[int, Failure]) -> None:
        if failures:
            self._finish(error=remote_exception(failures[min(failures)]))
        else:
            self._finish(values[0])

    def __repr__(self) -> str:
        state = "pending" if not self.ready() else "ok" if self._error is None else "failed"
        return f"<{type(self).__name__} {state}>"


class MapResult(AsyncResult[list[R]]):
    """``map_async``'s result: the values in input order, or the first failure to arrive
    (after which the rest of the job's input is no longer handed out)."""

    __slots__ = ("_left", "_lock", "_progress", "_values")

    def _take_back(self) -> None:
        """An awaiting asyncio task was cancelled: the tasks not handed out yet are
        dropped, as after Ctrl-C in ``get``."""
        self._abandon()

    def __init__(
        self,
        keepalive: object,
        length: int,
        callback: Callable[[list[R]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        super().__init__(keepalive, callback, error_callback)
        self._lock = threading.Lock()
        self._values: list[Any] = [None] * length
        self._left = length
        self._progress: ProgressCounter | None = None  # set by the Pool, if asked for
        if length == 0:
            self._finish([])

    def _finish(self, value: Any = None, error: BaseException | None = None) -> None:
        super()._finish(value, error)
        if self._progress is not None:
            self._progress.close()

    def _deliver(self, start: int, values: list[Any], failures: dict[int, Failure]) -> None:
        if self._progress is not None:
            self._progress.finished(start, len(values))
        if failures:
            self._finish(error=remote_exception(failures[min(failures)]))
            return
        with self._lock:
            self._values[start : start + len(values)] = values
            self._left -= len(values)
            complete = self._left == 0
        if complete:
            self._finish(self._values)


def get_or_abandon(result: AsyncResult[R]) -> R:
    """``result.get()`` for the pool's blocking calls: if the wait is interrupted (Ctrl-C),
    the call's tasks not yet handed to a worker are dropped instead of running for nobody."""
    try:
        return result.get()
    except BaseException:
        result._abandon()
        raise
    finally:
        del result  # (a frame the error's traceback holds: see AsyncResult.get)
