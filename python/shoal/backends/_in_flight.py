"""What the process backend keeps of each chunk it handed to the engine, in one record,
until the chunk is answered or will never be: how many tasks it has, its time limit, the
arena blocks of its large arguments, its progress hook, and its function; and what
becomes of those blocks, and of an answer that is not every task's value.

Example:
    >>> chunk = InFlight(3, None, [], None, abs)
    >>> chunk.count, chunk.blocks
    (3, [])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from shoal._process.messages import ChunkOutcome
from shoal._shoal import Arena
from shoal._wire.failure import Failure
from shoal.backends._records import ChunkResult, all_failed
from shoal.errors import ShoalError

__all__ = ["InFlight", "answer_with_failures", "free_blocks", "reclaim"]


class InFlight:
    """One chunk out with the engine (a plain class with slots: one is made per chunk,
    and nothing in it is for the garbage collector to track but its references)."""

    __slots__ = ("blocks", "count", "fn", "limit", "watcher")

    def __init__(
        self,
        count: int,
        limit: float | None,
        blocks: list[int],
        watcher: Callable[[int], None] | None,
        fn: Callable[..., Any],
    ) -> None:
        self.count = count
        """Its number of tasks."""
        self.limit = limit
        """Its tasks' time limit in seconds, if they have one."""
        self.blocks = blocks
        """The arena blocks holding its large arguments: freed when it is answered (but
        for those a worker kept, which it then frees itself)."""
        self.watcher = watcher
        """Its progress hook, when a bar watches it (``Chunk.on_progress``)."""
        self.fn = fn
        """Its function, kept alive while it is out: the function table may hold it only
        weakly, and would forget its number once the caller dropped it."""


def free_blocks(arena: Arena, blocks: list[int], kept: Iterable[int] = ()) -> None:
    """Frees ``blocks`` (a chunk's large arguments) in ``arena``, but those a worker
    ``kept``."""
    for offset in set(blocks).difference(kept):
        with contextlib.suppress(ValueError):
            arena.free(offset)


def reclaim(arena: Arena, pid: int, out: Iterable[InFlight]) -> None:
    """Frees whatever the ended worker ``pid`` still owned in ``arena``: results it never
    finished sending, arguments it kept. (Results it did send were adopted when they were
    read, before this.) But arguments it took over and then died before answering belong
    to a chunk still ``out`` that runs again elsewhere: those are taken back first."""
    unanswered = [offset for chunk in out for offset in chunk.blocks]
    with contextlib.suppress(ValueError, OSError):
        if unanswered:
            arena.reclaim(pid, unanswered)
        arena.free_owned_by(pid)


def answer_with_failures(
    chunk_id: int, count: int, worker: int, outcome: ChunkOutcome
) -> ChunkResult:
    """The result of a chunk of ``count`` tasks in which some task failed, or that its
    worker could not read at all (its error is then every task's)."""
    if len(outcome.values) != count:
        failure = outcome.failures.get(0) or Failure.capture(ShoalError("a malformed result"))
        return all_failed(chunk_id, count, failure, worker)
    return ChunkResult(
        chunk_id, outcome.values, outcome.failures, outcome.elapsed, worker, outcome.label
    )
