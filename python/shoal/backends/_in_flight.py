"""What the process backend keeps of each chunk it handed to the engine, in one record,
until the chunk is answered or will never be: how many tasks it has, its time limit, the
arena blocks of its large arguments, its progress hook, and its function.

Example:
    >>> chunk = InFlight(3, None, [], None, abs)
    >>> chunk.count, chunk.blocks
    (3, [])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from shoal._shoal import Arena

__all__ = ["InFlight", "free_blocks"]


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
