"""The worker-side loop every thread and cluster backend runs a chunk with: the same call
convention and the same error capture wherever a task runs (the process backend's
workers have their own, lighter loop in ``shoal._process.chunks``).

Example:
    >>> from shoal._wire.calls import CallKind
    >>> run_chunk(Chunk(0, 7, abs, [-1, -2], CallKind.ONE), worker=0).values
    [1, 2]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from shoal._wire.calls import CallKind
from shoal._wire.failure import Failure
from shoal._wire.labels import LABEL_AFTER, PROGRESS_EVERY, describe_arguments
from shoal.backends._records import Chunk, ChunkResult

__all__ = ["run_chunk"]


def run_chunk(chunk: Chunk, worker: int) -> ChunkResult:
    """Runs every task of ``chunk`` in this thread and collects values and failures.

    ``Exception`` subclasses are captured as failures; ``KeyboardInterrupt`` and
    ``SystemExit`` propagate, so a worker can still be stopped. A watched chunk
    (:attr:`Chunk.on_progress`) runs in growing slices, with a report between slices
    every :data:`PROGRESS_EVERY` seconds: no task pays for the watching.
    """
    values: list[Any] = []
    failures: dict[int, Failure] = {}
    started = time.perf_counter()
    items, report = chunk.items, chunk.on_progress
    if report is None:
        _run_items(chunk, items, 0, values, failures)
    else:
        done, step, reported = 0, 1, started
        while done < len(items):
            sliced = time.perf_counter()
            _run_items(chunk, items[done : done + step], done, values, failures)
            done = len(values)
            now = time.perf_counter()
            if now - sliced < PROGRESS_EVERY / 20:
                step *= 2
            if now - reported >= PROGRESS_EVERY and done < len(items):
                report(done)
                reported = now
    elapsed = time.perf_counter() - started
    label = None
    if elapsed >= LABEL_AFTER and chunk.items:
        label = describe_arguments(chunk.items[0], chunk.call.value)
    try:
        return ChunkResult(chunk.chunk_id, values, failures, elapsed, worker, label)
    finally:
        del failures  # (a frame a failure's traceback holds: see _run_items)


def _run_items(
    chunk: Chunk,
    items: Sequence[Any],
    offset: int,
    values: list[Any],
    failures: dict[int, Failure],
) -> None:
    """Runs ``items`` (the chunk's, from index ``offset``), appending to ``values`` and
    ``failures``."""
    fn, call = chunk.fn, chunk.call
    try:
        for index, item in enumerate(items, offset):
            try:
                if call is CallKind.ONE:
                    values.append(fn(item))
                elif call is CallKind.STAR:
                    values.append(fn(*item))
                else:
                    args, kwargs = item
                    values.append(fn(*args, **kwargs))
            except BaseException as exc:  # (a task raising SystemExit failed; nothing more)
                values.append(None)
                failures[index] = Failure.capture(exc)
    finally:
        # A failure's traceback holds this frame and its callers' (a task's error is
        # kept whole on threads): without ``failures`` in them, the failure is not in a
        # reference cycle, which would keep the pool alive until the collector runs.
        del failures
