"""``imap`` and ``imap_unordered``'s iterator: values as they arrive, in order or not,
with the read-ahead bound moved as the consumer takes them (a *target* of the Pool's
internals, as ``_results`` describes)."""

from __future__ import annotations

import operator
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import CancelledError
from multiprocessing import TimeoutError as MpTimeoutError

# (Public in multiprocessing.pool, though its stubs leave it out.)
from typing import Any, TypeVar

from shoal.backends.base import Failure
from shoal.pool._progress import ProgressCounter
from shoal.pool._results import TERMINATED, remote_exception

__all__ = ["IMapIterator"]

R = TypeVar("R")

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
        self._stop_reading: Callable[[int], None] = lambda ahead: None
        self._read_all: Callable[[], None] = lambda: None
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
        from shoal.pool._aio import iterate

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
                raise CancelledError(TERMINATED)
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
                # The error's traceback holds this frame: nothing in it may hold the
                # error, or the two are a reference cycle (with this iterator's pool).
                failed, error = chunk.error, None
                del chunk
                try:
                    raise failed
                finally:
                    del failed
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

    def _result(self) -> object:
        return self

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
