"""How many tasks go into one chunk.

``map`` knows its input's length and uses ``multiprocessing``'s formula (about four chunks
per worker), which keeps results identical in shape to a ``multiprocessing`` run. ``imap``
and ``imap_unordered`` cannot know a length, so without an explicit ``chunksize`` they
measure: the first chunks hold one task, and each finished chunk moves the size toward
what takes :data:`TARGET_SECONDS` to run, at most doubling per step, capped at
:data:`MAX_ADAPTIVE`. Slow tasks stay one per chunk (results stream at once); tiny tasks
are batched until per-chunk overhead stops mattering.
"""

from __future__ import annotations

import threading
from typing import Final

__all__ = ["MAX_ADAPTIVE", "TARGET_SECONDS", "ChunkSizer", "check_chunksize", "map_chunksize"]

TARGET_SECONDS: Final = 0.005
"""The time an adaptive chunk aims to take: long against a chunk's overhead (tens of
microseconds on threads) and short enough that results still stream."""

MAX_ADAPTIVE: Final = 1024
"""The largest adaptive chunk, which with the in-flight bound caps how far ``imap`` reads
ahead of its consumer."""

# Weight of the newest measurement in the running mean of seconds per task.
_SMOOTHING: Final = 0.3


def check_chunksize(chunksize: int | None) -> None:
    """``ValueError`` unless ``chunksize`` is ``None`` or a positive int."""
    if chunksize is None:
        return
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be an int or None, not {type(chunksize).__name__}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be at least 1, not {chunksize}")


def map_chunksize(length: int, workers: int) -> int:
    """``multiprocessing.Pool.map``'s default: ``ceil(length / (4 * workers))``, at least 1.

    >>> map_chunksize(10, 4), map_chunksize(1000, 4), map_chunksize(0, 4)
    (1, 63, 1)
    """
    chunksize, extra = divmod(length, workers * 4)
    return max(chunksize + (1 if extra else 0), 1)


class ChunkSizer:
    """The chunk size for one job: fixed, or adapted from measured task times.

    ``next_size`` is read by the Pool's feeder thread and ``observe`` called from its result
    thread; a lock keeps the running mean consistent.

    >>> sizer = ChunkSizer(None)
    >>> sizer.next_size()
    1
    >>> sizer.observe(1, 0.00001)  # 10 us a task: grow, at most doubling
    >>> sizer.next_size()
    2
    >>> ChunkSizer(7).next_size()
    7
    """

    def __init__(self, fixed: int | None) -> None:
        self._fixed = fixed
        self._size = fixed or 1
        self._per_task: float | None = None
        self._lock = threading.Lock()

    @property
    def adaptive(self) -> bool:
        """Whether the size follows measurements."""
        return self._fixed is None

    def next_size(self) -> int:
        """The number of tasks to put in the next chunk."""
        return self._size

    def observe(self, tasks: int, elapsed: float) -> None:
        """Records that a chunk of ``tasks`` tasks took ``elapsed`` seconds."""
        if self._fixed is not None or tasks <= 0:
            return
        sample = max(elapsed, 1e-9) / tasks
        with self._lock:
            mean = self._per_task
            mean = sample if mean is None else mean + _SMOOTHING * (sample - mean)
            self._per_task = mean
            ideal = int(TARGET_SECONDS / mean)
            self._size = max(1, min(ideal, self._size * 2, MAX_ADAPTIVE))
