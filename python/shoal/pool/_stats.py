"""``Pool.stats()``: what a pool reports about its work, and the tally it keeps for it.

The Pool's result path counts every answered chunk in a :class:`Tally` (a few additions
per chunk, nothing per task; ``benches/stats_bench.py`` measures it); the backend adds
what only it knows (when each worker started, how long its start-up took, why it was
replaced, the arena). ``stats()`` joins the two into a :class:`PoolStats`.

A chunk's tasks are timed together (timing each task would cost more than a tiny task
takes), so a slow task is known by the chunk it ran in: :attr:`SlowTask.tasks` says how
many tasks shared those seconds. Slow tasks run one per chunk once the adaptive chunk
size has measured them, and ``apply``, ``submit`` and calls with a time limit always do.
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final, TypedDict, cast

from shoal.backends.base import BackendStats, ChunkResult
from shoal.pool._chunks import ChunkSizer

__all__ = ["SLOWEST", "ArenaStats", "PoolStats", "SlowTask", "Tally", "WorkerStats"]

SLOWEST: Final = 5
"""How many of the slowest chunks ``Pool.stats()`` remembers."""


class ArenaStats(TypedDict):
    """The process backend's shared-memory arena (large buffers), in bytes and blocks."""

    capacity: int
    in_use: int
    peak: int
    blocks: int
    allocations: int
    frees: int
    refused: int


@dataclass(frozen=True, slots=True)
class SlowTask:
    """One of the slowest chunks the pool ran.

    Attributes:
        seconds: how long its worker ran it.
        tasks: how many tasks it held; ``1``: ``seconds`` is that one task's time.
        arguments: a short repr of its first task's arguments, as the call reads them
            (``None`` for a chunk shorter than ``shoal.backends.base.LABEL_AFTER``,
            whose worker did not describe it).
        worker: the index of the worker that ran it (a cluster worker's pid on a
            cluster backend).
    """

    seconds: float
    tasks: int
    arguments: str | None
    worker: int


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker index over the pool's life (a replacement keeps its predecessor's).

    Attributes:
        index: ``shoal.current_worker().index``; ``None`` on a cluster backend, whose
            workers are the cluster's and are known only by the results they sent.
        pid: the current (or last) worker's pid; ``None`` for a thread.
        alive: whether a worker holds the index now.
        tasks: tasks its workers finished (raised or returned).
        chunks: chunks its workers answered.
        busy: seconds its workers spent running chunks.
        idle: seconds its workers lived without a chunk to run (start-up included);
            ``None`` where their lives are not known (cluster backends).
        startup: seconds the current worker took from its start to the end of its
            initializer; ``None`` until known (a worker process tells it with its first
            answer) or on a cluster backend.
        restarts: how many times a new worker took the index, by reason: ``"died"``,
            ``"timeout"`` (killed for a task past its time limit), ``"maxtasksperchild"``,
            ``"max_memory_per_child"`` (its memory passed the pool's limit).
    """

    index: int | None
    pid: int | None
    alive: bool
    tasks: int
    chunks: int
    busy: float
    idle: float | None
    startup: float | None
    restarts: Mapping[str, int]

    @property
    def restart_count(self) -> int:
        """Every restart, whatever its reason."""
        return sum(self.restarts.values())


@dataclass(frozen=True, slots=True)
class PoolStats:
    """What ``Pool.stats()`` returns; ``print()`` it for a table.

    Attributes:
        backend: the backend's name.
        uptime: seconds since the pool was made.
        tasks_done: tasks finished, with a value or an error.
        tasks_failed: of those, the tasks that raised, timed out or lost their worker.
        chunks_done: chunks answered.
        tasks_per_second: ``tasks_done`` over ``uptime``.
        chunk_size: the next chunk size of the job that answered last (``None`` before
            any chunk was answered).
        in_flight: chunks handed to the backend and not answered yet.
        slowest: the :data:`~shoal.pool._stats.SLOWEST` longest chunks, longest first.
        workers: every worker index, by index (on a cluster backend: every cluster
            worker that answered, by pid).
        arena: the shared-memory arena's counters (process backend), else ``None``.
    """

    backend: str
    uptime: float
    tasks_done: int
    tasks_failed: int
    chunks_done: int
    tasks_per_second: float
    chunk_size: int | None
    in_flight: int
    slowest: tuple[SlowTask, ...]
    workers: tuple[WorkerStats, ...]
    arena: ArenaStats | None

    def __str__(self) -> str:
        from shoal.pool._stats_text import describe

        return describe(self)


class Tally:
    """The Pool's own counts, updated on its result path (one thread: the counting is
    inline in ``PoolCore._handle``) and read by ``stats()`` from any thread.
    ``SHOAL_STATS=0`` in the environment when a pool is made leaves its tally out (the
    Pool then reports no tasks)."""

    __slots__ = ("by_worker", "failed", "floor", "order", "sizer", "slowest", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        # Per worker id: [tasks, chunks, busy seconds].
        self.by_worker: dict[int, list[float]] = {}
        self.failed = 0
        self.sizer: ChunkSizer | None = None
        # A min-heap of (seconds, order, chunk) holding the slowest chunks; floor
        # is what a chunk must exceed to enter it.
        self.slowest: list[tuple[float, int, SlowTask]] = []
        self.floor = -1.0
        self.order = itertools.count()

    @staticmethod
    def wanted() -> bool:
        """Whether pools made now keep a tally (``SHOAL_STATS`` is not ``0``)."""
        return os.environ.get("SHOAL_STATS", "1") != "0"

    def note_slow(self, result: ChunkResult, count: int) -> None:
        """Keeps the chunk if it is among the :data:`SLOWEST` so far."""
        slow = SlowTask(result.elapsed, count, result.label, result.worker)
        entry = (result.elapsed, next(self.order), slow)
        if len(self.slowest) < SLOWEST:
            heapq.heappush(self.slowest, entry)
            if len(self.slowest) == SLOWEST:
                self.floor = self.slowest[0][0]
        else:
            heapq.heappushpop(self.slowest, entry)
            self.floor = self.slowest[0][0]

    def report(self, backend: str, reported: BackendStats, in_flight: int) -> PoolStats:
        """Joins this tally and the backend's report into a :class:`PoolStats`."""
        now = time.monotonic()
        uptime = now - self.started
        counts = {key: tuple(value) for key, value in list(self.by_worker.items())}
        tasks = int(sum(c[0] for c in counts.values()))
        chunks = int(sum(c[1] for c in counts.values()))
        workers: list[WorkerStats] = []
        index_of: dict[int, int] = {}
        if reported.workers is not None:
            for life in reported.workers:
                # Every worker that held the index counts towards it.
                mine = [counts.get(worker, (0, 0, 0.0)) for worker in life.workers]
                index_of.update(dict.fromkeys(life.workers, life.index))
                done = int(sum(c[0] for c in mine))
                answered = int(sum(c[1] for c in mine))
                busy = sum(c[2] for c in mine)
                workers.append(
                    WorkerStats(
                        life.index,
                        life.pid,
                        life.ended is None,
                        done,
                        answered,
                        busy,
                        max(life.lived(now) - busy, 0.0),
                        life.startup,
                        life.restarts,
                    )
                )
        else:
            for key, (their_tasks, their_chunks, their_busy) in sorted(counts.items()):
                if key >= 0:  # (-1: answered by no worker)
                    workers.append(
                        WorkerStats(
                            *(None, key, True, int(their_tasks), int(their_chunks), their_busy),
                            *(None, None, {}),
                        )
                    )
        sizer = self.sizer
        return PoolStats(
            backend=backend,
            uptime=uptime,
            tasks_done=tasks,
            tasks_failed=self.failed,
            chunks_done=chunks,
            tasks_per_second=tasks / uptime if uptime > 0 else 0.0,
            chunk_size=None if sizer is None else sizer.next_size(),
            in_flight=in_flight,
            slowest=tuple(
                replace(slow, worker=index_of.get(slow.worker, slow.worker))
                for _, _, slow in sorted(list(self.slowest), reverse=True)
            ),
            workers=tuple(workers),
            arena=cast("ArenaStats | None", reported.arena),
        )
