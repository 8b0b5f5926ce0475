"""Progress of a map: what ``progress=`` accepts, and the counter behind it.

``progress=True`` draws a ``tqdm.auto`` bar (a widget in notebooks); a ``tqdm`` bar or a
``rich.progress.Progress`` given is used as it is (shoal sets the total if the bar has
none, and leaves the bar open: it is the caller's); any other callable is called as
``progress(done, total)`` (``total`` is None until it is known). The counter counts
finished tasks, not chunks: as each chunk's results arrive (on the thread that delivers
them; a ``map`` with a bar keeps its chunks small, see :data:`PROGRESS_STEPS`), and
while a long chunk runs, from the worker's reports (:meth:`ProgressCounter.partly`;
the process and thread backends send them). It is closed when the map ends: done,
failed, cancelled, terminated, or its iterator dropped.

Example:
    >>> seen = []
    >>> counter = ProgressCounter(lambda done, total: seen.append((done, total)), 3)
    >>> counter.partly(0, 1)  # the chunk from item 0 is one task in
    >>> counter.finished(0, 2); counter.finished(2, 1); counter.close()
    >>> seen
    [(1, 3), (2, 3), (3, 3)]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeAlias

__all__ = ["PROGRESS_STEPS", "ProgressCounter", "ProgressSpec", "counter_for"]

PROGRESS_STEPS = 100
"""A ``map`` with a bar and no explicit ``chunksize`` cuts at least this many chunks, so
the bar moves in steps of at most 1% (multiprocessing's formula gives four chunks per
worker, which would make it jump by an eighth at a time on two workers); ``imap`` needs
nothing, its adaptive chunks take about 5 ms each."""

ProgressSpec: TypeAlias = "bool | Callable[[int, int | None], object] | Any | None"
"""What ``progress=`` takes: None/False (no counting), True, a tqdm bar, a rich
``Progress``, or a callable of ``(done, total)``."""


class ProgressCounter:
    """Counts finished tasks of one map into ``sink``."""

    def __init__(self, sink: Any, total: int | None) -> None:
        self._lock = threading.Lock()
        self._done = 0
        self._total = total
        self._closed = False
        self._owned = False  # a bar shoal made, which it closes
        self._rich_task: Any = None
        self._bar: Any = None
        self._call: Callable[[int, int | None], object] | None = None
        # Per running chunk (by its first item's index): the tasks counted from reports.
        self._partly: dict[int, int] = {}
        if sink is True:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="task")
            self._owned = True
        elif hasattr(sink, "update") and hasattr(sink, "n"):  # a tqdm bar
            self._bar = sink
            if total is not None and sink.total is None:
                sink.total = total
                sink.refresh()
        elif hasattr(sink, "add_task") and hasattr(sink, "advance"):  # rich Progress
            self._rich = sink
            self._rich_task = sink.add_task("shoal", total=total)
        elif callable(sink):
            self._call = sink
        else:
            raise TypeError(
                "progress must be True, a tqdm bar, a rich.progress.Progress or a callable"
                f" of (done, total), not {type(sink).__name__}"
            )

    def advance(self, count: int) -> None:
        """``count`` more tasks finished."""
        if not count:
            return
        with self._lock:
            if self._closed:
                return
            self._done += count
            done, total = self._done, self._total
            if self._bar is not None:
                self._bar.update(count)
            elif self._rich_task is not None:
                self._rich.advance(self._rich_task, count)
            elif self._call is not None:
                self._call(done, total)

    def partly(self, start: int, done: int) -> None:
        """A worker says ``done`` tasks of the chunk beginning at item ``start`` are
        finished (the chunk is still running)."""
        with self._lock:
            before = self._partly.get(start, 0)
            if done <= before or self._closed:
                return
            self._partly[start] = done
        self.advance(done - before)

    def finished(self, start: int, count: int) -> None:
        """The chunk beginning at item ``start``, of ``count`` tasks, is answered."""
        if self._partly:
            with self._lock:
                count -= self._partly.pop(start, 0)
        self.advance(count)

    def set_total(self, total: int) -> None:
        """The input turned out to hold ``total`` tasks."""
        with self._lock:
            if self._closed or self._total is not None:
                return
            self._total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()
            elif self._rich_task is not None:
                self._rich.update(self._rich_task, total=total)
            elif self._call is not None:
                self._call(self._done, total)

    def close(self) -> None:
        """The map ended (whichever way): a bar shoal made is closed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._owned:
                self._bar.close()


def counter_for(spec: ProgressSpec, total: int | None) -> ProgressCounter | None:
    """The counter for ``progress=spec``, or None when no progress is wanted."""
    if spec is None or spec is False:
        return None
    return ProgressCounter(spec, total)
