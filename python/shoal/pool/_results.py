"""The objects a Pool hands back: ``AsyncResult``, the ``imap`` iterators, and the
adapter that feeds a ``concurrent.futures.Future``.

Every one of them is a *target* for the Pool's internals: the result thread calls
``_deliver`` with a chunk's values and failures, the feeder calls ``_set_length`` once the
input is exhausted (or ``_set_source_error`` if reading it failed), and ``terminate`` calls
``_cancel``. Each keeps its own lock; none calls into the Pool while holding it.
"""

from __future__ import annotations

import contextlib
import operator
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures._base import FINISHED as _FINISHED
from concurrent.futures._base import PENDING as _PENDING
from concurrent.futures._base import RUNNING as _RUNNING
from multiprocessing import TimeoutError as MpTimeoutError

# (Public in multiprocessing.pool, though its stubs leave it out.)
from multiprocessing.pool import RemoteTraceback  # type: ignore[attr-defined]
from typing import Any, Generic, Protocol, TypeVar

from shoal._progress import ProgressCounter
from shoal.backends.base import Failure

__all__ = ["AsyncResult", "IMapIterator", "PoolFuture", "RemoteTraceback", "remote_exception"]

R = TypeVar("R")

_TERMINATED = "the pool was terminated before this task finished"


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


def _report_callback_error(exc: BaseException) -> None:
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
        from shoal._aio import result_of

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
        if self._error is not None:
            raise self._error
        value: R = self._value
        return value

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
            _report_callback_error(exc)
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
        self._finish(error=CancelledError(_TERMINATED))

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


# How many items an imap consumer takes before it tells the Pool (and always when it
# runs out): the read-ahead bound moves in steps of this size.
_REPORT_EVERY = 64


class _Raised:
    """A task's error waiting in an imap stream at its place (a private type, so no
    task's value can be mistaken for one)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class IMapIterator(Iterator[R]):
    """The iterator ``imap`` and ``imap_unordered`` return; ``next(timeout)`` as in
    ``multiprocessing``. A task that raised raises at its place in the stream, and the
    iteration goes on after it.

    Example:
        >>> import shoal
        >>> with shoal.Pool(2) as pool:
        ...     it = pool.imap(abs, [-1, -2, -3])
        ...     it.next(timeout=10), list(it)
        (1, [2, 3])
    """

    def __init__(self, keepalive: object, ordered: bool) -> None:
        self._keepalive: object = keepalive
        self._ordered = ordered
        self._cond = threading.Condition(threading.Lock())
        # Chunks of values ready to be yielded, in the order they will be, and tasks'
        # errors (_Raised) between them.
        self._chunks: deque[list[Any] | _Raised] = deque()
        # The chunk being yielded and the cursor in it: a list iterator, so that a
        # ``for`` loop runs through a chunk at C speed (see _stream); every way of
        # iterating shares it, so none ever holds values another cannot see.
        self._current: list[Any] = []
        self._cursor: Iterator[Any] = iter(self._current)
        self._taken = 0  # values and errors moved out of _chunks
        # imap: chunks that arrived ahead of their turn, by their first index.
        self._early: dict[int, list[Any] | _Raised] = {}
        self._next_index = 0
        # imap_unordered: the input's error and its index; it is yielded once every item
        # read before it has been.
        self._source_error: tuple[int, BaseException] | None = None
        self._length: int | None = None
        self._cancelled = False
        # How many items the consumer took that the Pool was not told of yet (it holds a
        # job back by its read-ahead bound); _on_consumed is set by the Pool right after
        # construction.
        self._unreported = 0
        self._on_consumed: Callable[[int], None] = lambda count: None
        # Reads no more of the input (set by the Pool, as _on_consumed is).
        self._stop_reading: Callable[[], None] = lambda: None
        # Called once when a next value, error or the end arrives (an ``async for``
        # waiting on the event loop).
        self._wakers: list[Callable[[], object]] = []
        self._progress: ProgressCounter | None = None  # see _count_progress
        self._finished = 0  # tasks whose results (or errors) arrived
        self._tasks: int | None = None  # how many tasks the input held, once known

    def _count_progress(self, counter: ProgressCounter) -> None:
        """Counts this iterator's finished tasks into ``counter``, closed at the end, at
        ``terminate()``, or when the iterator is dropped."""
        self._progress = counter
        weakref.finalize(self, counter.close)

    def _progressed(self, start: int, count: int) -> None:
        # Called with the condition held.
        progress = self._progress
        if progress is None:
            return
        self._finished += count
        progress.finished(start, count)
        if self._tasks is not None and self._finished >= self._tasks:
            progress.close()

    def __aiter__(self) -> AsyncIterator[R]:
        """``async for value in pool.imap(...)`` in a coroutine: values as they come,
        with no thread waiting (the pool's result thread wakes the event loop). A task's
        error is raised at its place and ends that loop, as in a ``for`` loop.

        >>> import asyncio, shoal
        >>> async def main(pool):
        ...     return [x async for x in pool.imap(abs, [-1, -2, -3])]
        >>> with shoal.Pool(2) as pool:
        ...     asyncio.run(main(pool))
        [1, 2, 3]
        """
        from shoal._aio import iterate

        return iterate(self)

    def __iter__(self) -> Iterator[R]:
        # A generator, not self: per item, a resumed generator costs a fraction of a
        # __next__ call. It holds nothing of its own (every way of iterating shares the
        # cursor), so loops left with break, later loops and next() never disagree.
        return self._stream()

    def _stream(self) -> Iterator[R]:
        while True:
            yield from self._cursor
            if not self._advance(None):
                return

    def __next__(self) -> R:
        return self.next()

    def next(self, timeout: float | None = None) -> R:
        """The next result, waiting up to ``timeout`` seconds (``None``: no limit) and
        raising ``multiprocessing.TimeoutError`` when none came."""
        while True:
            for value in self._cursor:
                result: R = value
                return result
            if not self._advance(timeout):
                raise StopIteration

    def _advance(self, timeout: float | None) -> bool:
        """After the cursor ran out: moves it to the next chunk, waiting up to ``timeout``
        for one; raises the task's error that comes next; False at the end."""
        with self._cond:
            if operator.length_hint(self._cursor):
                return True  # another thread moved it meanwhile
            self._unreported += len(self._current)
            self._current = []
            self._cursor = iter(self._current)
            about_to_wait = not self._chunks
        if about_to_wait:
            # The Pool may be waiting for room, and what this consumer took (the chunk
            # just finished included) is what makes it: told before the wait, or the
            # wait could be for a chunk the Pool will not read until it is told.
            self._report()
        with self._cond:
            if operator.length_hint(self._cursor):
                return True  # another consumer moved it meanwhile
            if not self._chunks:
                if not self._cond.wait_for(self._has_next, timeout):
                    raise MpTimeoutError(f"no result within {timeout} seconds")
                if operator.length_hint(self._cursor):
                    return True  # another consumer moved it while this one waited
            if self._cancelled:
                raise CancelledError(_TERMINATED)
            if self._chunks:
                chunk = self._chunks.popleft()
            else:
                error = self._source_error
                if error is None or self._taken != error[0]:
                    self._keepalive = None
                    return False
                self._source_error = None
                chunk = _Raised(error[1])
            if isinstance(chunk, _Raised):
                self._taken += 1
                self._unreported += 1
                raise chunk.error
            self._taken += len(chunk)
            self._current = chunk
            self._cursor = iter(chunk)
        if self._unreported >= _REPORT_EVERY:
            self._report()
        return True

    def _take_rest(self, timeout: float | None) -> list[Any] | None:
        """The values left in the current chunk (after waiting up to ``timeout`` for the
        next one), handed over whole: nothing here keeps a reference to them, so a value
        the consumer drops is freed at once. Raises a task's error at its place; None at
        the end."""
        if not operator.length_hint(self._cursor) and not self._advance(timeout):
            return None
        with self._cond:
            rest = list(self._cursor)
            self._unreported += len(self._current)
            self._current = []
            self._cursor = iter(self._current)
        return rest

    def _wake_when_ready(self, wake: Callable[[], object]) -> bool:
        """Has ``wake()`` called once a next value, error or the end arrives; False (and
        no call) if one is here already."""
        with self._cond:
            if operator.length_hint(self._cursor) or self._has_next():
                return False
            self._wakers.append(wake)
            return True

    def _wake(self) -> None:
        # Called with the condition held; the wake-ups only schedule work elsewhere.
        wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    def _report(self) -> None:
        count, self._unreported = self._unreported, 0
        if count:
            self._on_consumed(count)

    def _has_next(self) -> bool:
        if self._cancelled or self._chunks:
            return True
        if self._source_error is not None and self._taken == self._source_error[0]:
            return True
        return self._length is not None and self._taken >= self._length

    def _wants_more(self) -> bool:
        return not self._cancelled

    def _handed_over(self, chunk_id: int) -> None:
        """Nothing to do: an iterator's chunks are not taken back one by one."""

    def _deliver(self, start: int, values: list[Any], failures: dict[int, Failure]) -> None:
        # (first index, piece): runs of values, and each task's error at its place.
        pieces: list[tuple[int, list[Any] | _Raised]] = [(start, values)]
        if failures:
            pieces, at = [], 0
            for i in sorted(failures):
                if at < i:
                    pieces.append((start + at, values[at:i]))
                pieces.append((start + i, _Raised(remote_exception(failures[i]))))
                at = i + 1
            if at < len(values):
                pieces.append((start + at, values[at:]))
        with self._cond:
            if self._cancelled:
                return
            self._progressed(start, len(values))
            if not self._ordered:
                self._chunks.extend(piece for _, piece in pieces)
            else:
                self._early.update(pieces)
                self._release_in_order()
            self._cond.notify_all()
            if self._wakers:
                self._wake()

    def _release_in_order(self) -> None:
        while (chunk := self._early.pop(self._next_index, None)) is not None:
            self._chunks.append(chunk)
            self._next_index += 1 if isinstance(chunk, _Raised) else len(chunk)

    def _set_length(self, length: int) -> None:
        with self._cond:
            self._length = length
            self._tasks = length
            if self._progress is not None:
                self._progress.set_total(length)
                self._progressed(-1, 0)  # (no chunk: closes the bar if all are done)
            self._cond.notify_all()
            self._wake()

    def _set_source_error(self, index: int, exc: BaseException) -> None:
        with self._cond:
            # At its place in the stream: after every task read before it.
            if self._ordered:
                self._early[index] = _Raised(exc)
                self._release_in_order()
            else:
                self._source_error = (index, exc)
            self._length = index + 1
            self._tasks = index  # the tasks read before the error
            if self._progress is not None:
                self._progress.set_total(index)
                self._progressed(-1, 0)
            self._cond.notify_all()
            self._wake()

    def _cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._chunks.clear()
            self._current.clear()  # a loop inside this chunk stops at once
            if self._progress is not None:
                self._progress.close()
            self._cond.notify_all()
            self._wake()


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
