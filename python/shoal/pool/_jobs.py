"""Jobs: one per ``map``/``imap``/``apply``/``submit`` call, each its tasks' source, how big
its chunks are, and the result object its values go to (``Target``)."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Protocol

from shoal.backends.base import CallKind, Failure
from shoal.pool._chunks import ChunkSizer
from shoal.pool._progress import ProgressCounter

__all__ = ["READ_AHEAD", "SINGLE", "Job", "Target", "WeakTarget"]

SINGLE: Final = ChunkSizer(1)
"""The sizer of every job cut one task per chunk (single calls, calls with a time limit):
fixed, so it is never measured, and shared."""

READ_AHEAD: Final = 4
"""An ``imap`` job reads at most this many chunks per worker ahead of its consumer:
enough to keep every worker busy while the consumer catches up, whatever the backend's
``max_in_flight`` (which may be far larger, for single calls)."""


class Target(Protocol):
    """What a job's result object offers the core (see ``_results``)."""

    def _wants_more(self) -> bool: ...
    def _handed_over(self, chunk_id: int) -> None: ...
    def _deliver(self, start: int, values: list[Any], failures: dict[int, Failure]) -> None: ...
    def _set_length(self, length: int) -> None: ...
    def _set_source_error(self, index: int, exc: BaseException) -> None: ...
    def _cancel(self) -> None: ...
    def _result(self) -> object:
        """The object the caller holds for the call (``Pool._cache`` lists it); ``None``
        once nobody can."""
        ...


class Job:
    """One call's tasks: where they come from, how big a chunk is, where results go."""

    __slots__ = (
        "call",
        "consumed",
        "end",
        "fn",
        "items",
        "iterator",
        "job_id",
        "limit",
        "progress",
        "pulled",
        "retries",
        "single",
        "sizer",
        "stopped",
        "target",
        "timeout",
        "window",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        call: CallKind,
        source: Sequence[Any] | Iterator[Any],
        sizer: ChunkSizer,
        target: Target,
        window: int | None,
        timeout: float | None = None,
        retries: int = 0,
        limit: int | None = None,
        progress: ProgressCounter | None = None,
    ) -> None:
        self.job_id = 0
        # A bar is watching: chunks carry a hook for their workers' reports.
        self.progress = progress
        self.fn = fn
        self.call = call
        self.timeout = timeout  # seconds a task may run; None: no limit
        self.retries = retries  # runs again after its worker died, this many times
        # A sequence is sliced; an iterator is read item by item, so that an error while
        # reading lands exactly at its position.
        self.items: Sequence[Any] | None = None
        self.iterator: Iterator[Any] | None = None
        if type(source) is list or isinstance(source, Sequence):  # list: the fast path
            self.items = source
        else:
            self.iterator = source
        self.sizer = sizer
        self.target = target
        self.window = window  # chunks of read-ahead allowed; None: no bound
        # Items of read-ahead allowed, whatever the chunk size (Executor.map's
        # buffersize); None: only the window bounds it.
        self.limit = limit
        self.stopped = False  # no more of the input is to be read (stop_reading)
        self.end: int | None = None  # read no item past this one (stop_reading)
        self.pulled = 0  # items handed out
        self.consumed = 0  # items the consumer has taken (imap only)
        # One task from a list (apply, submit, a map of one): handed over in one piece,
        # from whichever thread has room for it.
        self.single = self.items is not None and len(self.items) == 1 and window is None

    def has_room(self, unbounded: bool) -> bool:
        if self.window is None or unbounded:
            return True
        ahead = self.pulled - self.consumed
        if self.limit is not None and ahead >= self.limit:
            return False
        return ahead < self.window * self.sizer.next_size()

    def pull(self) -> tuple[Sequence[Any], bool, BaseException | None]:
        """The next chunk's items, whether the input is now exhausted, and the error the
        input raised, if any. Called by the feeder only, without the core's lock."""
        size = self.sizer.next_size()
        if self.limit is not None:
            size = max(min(size, self.limit - (self.pulled - self.consumed)), 1)
        if self.end is not None:
            size = max(min(size, self.end - self.pulled), 0)
            # (Read under no lock, as end was set before the feeder could pick the job.)
            self.stopped = self.pulled + size >= self.end
        if self.items is not None:
            chunk = self.items[self.pulled : self.pulled + size]
            return chunk, self.pulled + len(chunk) >= len(self.items), None
        assert self.iterator is not None
        items: list[Any] = []
        try:
            # (extend keeps what it read before an error: the error lands at its place.)
            items.extend(itertools.islice(self.iterator, size))
        except Exception as exc:
            if not self.sizer.adaptive:
                # As multiprocessing does with a chunksize: the chunk the input failed
                # in is dropped and the error raised where it would have begun.
                items = []
            return items, True, exc
        return items, len(items) < size, None


class WeakTarget:
    """Holds a result object the Pool need not keep alive: an ``imap`` iterator nobody
    can read any more is collected, its job is dropped, and its pool can be collected
    too. (An ``AsyncResult`` is held strongly: its callbacks must run either way.)"""

    __slots__ = ("_ref",)

    def __init__(self, target: Target) -> None:
        self._ref = weakref.ref(target)

    def _wants_more(self) -> bool:
        target = self._ref()
        return target is not None and target._wants_more()

    def _result(self) -> object:
        return self._ref()

    def _handed_over(self, chunk_id: int) -> None:
        """Nothing to do: an iterator's chunks are not taken back one by one."""

    def _deliver(self, start: int, values: list[Any], failures: dict[int, Failure]) -> None:
        if (target := self._ref()) is not None:
            target._deliver(start, values, failures)

    def _set_length(self, length: int) -> None:
        if (target := self._ref()) is not None:
            target._set_length(length)

    def _set_source_error(self, index: int, exc: BaseException) -> None:
        if (target := self._ref()) is not None:
            target._set_source_error(index, exc)

    def _cancel(self) -> None:
        if (target := self._ref()) is not None:
            target._cancel()
