"""Running one chunk in a worker: the task loop over its items, the thread that reports a
watched chunk's progress, and the pickled reply."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from shoal._process.messages import ChunkPayload, outcome_fields
from shoal._shoal import Arena, ShmBuffer, WorkerLink
from shoal._wire.buffers import MAGIC, OutOfBand, pack, unpack
from shoal._wire.calls import BY_CODE, WATCHED, CallKind
from shoal._wire.failure import Failure
from shoal._wire.labels import LABEL_AFTER, PROGRESS_EVERY, describe_arguments
from shoal._wire.pickling import dumps_detached, loads
from shoal.errors import ShoalError

__all__ = ["ChunkRunner", "keep"]

# The call conventions' codes, as the task loop compares them.
_ONE: Final = CallKind.ONE.code
_STAR: Final = CallKind.STAR.code


class ChunkRunner:
    """Runs a worker's chunks: its link (for progress reports) and the pool's arena (large
    arguments are read in place from it; large results go into it)."""

    __slots__ = ("_arena", "_link", "_out_of_band", "_watcher")

    def __init__(self, link: WorkerLink, arena: Arena) -> None:
        self._link = link
        self._arena = arena
        self._out_of_band = OutOfBand(arena)
        self._watcher: _Reporter | None = None

    def _reporter(self) -> _Reporter:
        # Started with the first watched chunk: a worker no bar watches has no thread.
        if self._watcher is None:
            self._watcher = _Reporter(self._link)
        return self._watcher

    def run(  # noqa: C901 (the task loop, inline on purpose)
        self,
        fn: Callable[..., Any] | Failure | None,
        payload: bytes,
        broken: Failure | None,
        chunk: int,
    ) -> bytes:
        """Runs one chunk and returns its pickled :class:`ChunkOutcome` (see
        :meth:`encode`)."""
        started = time.perf_counter()
        views: list[ShmBuffer] = []
        try:
            decoded: Any
            if payload.startswith(MAGIC):
                # Large arguments stay in the parent's blocks (it frees them when this chunk
                # is answered), read in place.
                decoded, views = unpack(payload, self._arena, own=False)
            else:
                decoded = loads(payload)
            sent = ChunkPayload._make(decoded)
            call, items = sent.call, sent.items
            del decoded, sent
        except Exception as exc:
            # The parent fails every task of the chunk with it.
            return self.encode([None], {0: Failure.capture_in_worker(exc)}, 0.0, keep(views))
        count = len(items)
        problem: Failure | None = broken
        if problem is None and isinstance(fn, Failure):
            problem = fn
        if problem is None and fn is None:
            problem = Failure.capture_in_worker(ShoalError("the task's function never arrived"))
        if problem is not None or not callable(fn):
            problem = problem or Failure.capture_in_worker(
                ShoalError("the task's function is not callable")
            )
            del items
            every = dict.fromkeys(range(count), problem)
            return self.encode([None] * count, every, 0.0, keep(views))
        values: list[Any] = []
        failures: dict[int, Failure] = {}
        append = values.append
        remaining = iter(items)
        watched = call & WATCHED
        if watched:
            call ^= WATCHED
            self._reporter().watch(chunk, values)
        while True:
            # Tight loops, one per call convention: a chunk of tiny tasks spends its time here.
            try:
                if call == _ONE:
                    for item in remaining:
                        append(fn(item))
                elif call == _STAR:
                    for item in remaining:
                        append(fn(*item))
                else:
                    for args, kwargs in remaining:
                        append(fn(*args, **kwargs))
                break
            except BaseException as exc:
                # SystemExit and KeyboardInterrupt raised by a task end that task, not the
                # worker: its caller gets them as the task's error. The loop goes on with
                # the next item.
                failures[len(values)] = Failure.capture_in_worker(exc, from_task=True)
                append(None)
        if watched:
            self._reporter().watch(None, values)
        elapsed = time.perf_counter() - started
        label = None
        if elapsed >= LABEL_AFTER and count:
            label = describe_arguments(items[0], BY_CODE[call].value)
        # The last item stays bound to the loop's variables: dropped too, or its large
        # arguments would look still in use and be kept for nothing.
        item = args = kwargs = None
        del items, remaining
        return self.encode(values, failures, elapsed, keep(views), label)

    def encode(
        self,
        values: list[Any],
        failures: dict[int, Failure],
        elapsed: float,
        kept: list[int],
        label: str | None = None,
    ) -> bytes:
        """Pickles a chunk's outcome: its values, failures, seconds, the argument blocks it
        kept and a description of its arguments (slow chunks only). A value or exception
        that cannot be pickled becomes that task's error, saying so, so that one bad
        result never loses the others."""
        outcome = outcome_fields(values, failures, elapsed, kept, label)
        try:
            return pack(outcome, self._out_of_band)[0]
        except Exception:
            pass
        from shoal.backends._sendable import make_sendable  # (rarely needed: loaded then)

        make_sendable(values, failures, dumps_detached)
        return pack(outcome, self._out_of_band)[0]


class _Reporter:
    """Tells the pool how far the watched chunk running now has got, every
    :data:`PROGRESS_EVERY` seconds, from a thread of its own: the task loop pays nothing
    for it (it reads the length of the values list the loop appends to)."""

    def __init__(self, link: WorkerLink) -> None:
        self._link = link
        self._watched: tuple[int, list[Any]] | None = None
        import threading

        threading.Thread(target=self._report, name="shoal-progress", daemon=True).start()

    def watch(self, chunk: int | None, values: list[Any]) -> None:
        """Watches ``values`` of ``chunk`` from now on (``None``: nothing)."""
        self._watched = None if chunk is None else (chunk, values)

    def _report(self) -> None:
        told: tuple[int, int] | None = None
        while True:
            time.sleep(PROGRESS_EVERY)
            watched = self._watched
            if watched is None:
                continue
            chunk, values = watched
            now = (chunk, len(values))
            # (A report that cannot go at once is skipped: the next one says more.)
            if now[1] and now != told and self._link.send_progress(*now):
                told = now


def keep(views: list[ShmBuffer]) -> list[int]:
    """The argument blocks something of this process still uses after the chunk (an
    array the task stored, or a result that is a view of an argument): this process
    takes them over, so that the parent does not free them, and frees them itself when
    they are no longer used. Returns their offsets, for the parent."""
    kept = []
    for view in views:
        # Every object rebuilt over a block holds an export of it (unpack hands out
        # memoryviews only), so a live export is exactly "still in use".
        if view.exports:
            view.adopt()
            kept.append(view.offset)
    return kept
