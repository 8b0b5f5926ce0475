"""The lives of a backend's workers, by index, for ``Pool.stats()``.

A backend that starts and replaces its own workers (processes, threads) keeps a
:class:`WorkerLives`: it says when each worker started, when it was ready (its
initializer done), and when and why it ended. A replacement takes its predecessor's
index, so one :class:`WorkerLife` covers every worker that held the index, and its
restarts say why each one before it left.

Times are ``time.monotonic()`` readings: the clock is the same in every process of the
machine, so a worker process may report its own readiness.

Example:
    >>> lives = WorkerLives()
    >>> lives.started(0, pid=100, worker=7, when=10.0)
    >>> lives.ready(0, when=10.25)
    >>> lives.ended(0, "maxtasksperchild", when=12.0)
    >>> lives.started(0, pid=101, worker=9, when=12.0)
    >>> life = lives.snapshot()[0]
    >>> life.pid, life.workers, life.startup, life.restarts, life.lived(now=13.0)
    (101, [7, 9], None, {'maxtasksperchild': 1}, 3.0)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Final, Literal

__all__ = ["RESTART_REASONS", "RestartReason", "WorkerLife", "WorkerLives"]

RestartReason = Literal["died", "timeout", "maxtasksperchild", "max_memory_per_child"]
RESTART_REASONS: Final[tuple[RestartReason, ...]] = (
    "died",
    "timeout",
    "maxtasksperchild",
    "max_memory_per_child",
)
"""Why a worker was replaced: it died (killed, crashed, or exited on its own), it was
killed for running a task past its time limit, or it had run ``maxtasksperchild``
chunks."""


@dataclass(slots=True)
class WorkerLife:
    """Worker index ``index`` over the pool's life: the worker holding it now, and the
    restarts before it.

    Attributes:
        index: the worker's index (``shoal.current_worker().index``).
        pid: the current (or last) worker's pid; ``None`` for a thread.
        workers: the id (``ChunkResult.worker``) of each worker that held the index, the
            current one last.
        launched: when the current worker was started.
        startup: seconds from its start to the end of its initializer; ``None`` until
            known (a worker process tells it with its first answer).
        ended: when the current worker ended; ``None`` while it runs.
        earlier: seconds lived by the workers that held the index before it.
        restarts: how many times the index was given to a new worker, by reason.
    """

    index: int
    pid: int | None
    workers: list[int]
    launched: float
    startup: float | None = None
    ended: float | None = None
    earlier: float = 0.0
    restarts: dict[str, int] = field(default_factory=dict)

    def lived(self, now: float) -> float:
        """Seconds the workers of this index have lived, up to ``now``."""
        end = self.ended if self.ended is not None else now
        return self.earlier + max(end - self.launched, 0.0)


class WorkerLives:
    """Thread-safe record of each worker index's life (see the module's doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lives: dict[int, WorkerLife] = {}

    def started(self, index: int, pid: int | None, worker: int, when: float | None = None) -> None:
        """Worker ``worker`` (its ``ChunkResult.worker`` id) took ``index``: the first,
        or a replacement."""
        now = time.monotonic() if when is None else when
        with self._lock:
            life = self._lives.get(index)
            if life is None:
                self._lives[index] = WorkerLife(index, pid, [worker], now)
                return
            life.earlier = life.lived(now)
            life.pid, life.launched, life.startup, life.ended = pid, now, None, None
            if worker not in life.workers:
                life.workers.append(worker)

    def ready(self, index: int, when: float | None = None) -> None:
        """The worker holding ``index`` finished its initializer at ``when``."""
        now = time.monotonic() if when is None else when
        with self._lock:
            life = self._lives.get(index)
            if life is not None and life.startup is None:
                life.startup = max(now - life.launched, 0.0)

    def ended(self, index: int, reason: RestartReason | None, when: float | None = None) -> None:
        """The worker holding ``index`` ended; ``reason``: why, when it is replaced
        (``None``: it is not, the pool is stopping)."""
        now = time.monotonic() if when is None else when
        with self._lock:
            life = self._lives.get(index)
            if life is None:
                return
            life.ended = now
            if reason is not None:
                life.restarts[reason] = life.restarts.get(reason, 0) + 1

    def snapshot(self) -> list[WorkerLife]:
        """Copies of every index's life, by index."""
        with self._lock:
            return [
                replace(life, workers=list(life.workers), restarts=dict(life.restarts))
                for _, life in sorted(self._lives.items())
            ]
