"""The contract between ``shoal.Pool`` and the backends that run its tasks.

The Pool front-end owns everything a user sees: argument checking, chunking, ordering,
result objects, callbacks, laziness and the in-flight bound. A backend only runs chunks:
it receives :class:`Chunk` objects through :meth:`Backend.submit` and hands back one
:class:`ChunkResult` per chunk through the :data:`ResultSink` it was built with.

Worker-side code of every backend calls :func:`run_chunk`, so a task behaves the same
(same call convention, same error capture) on threads, processes or a cluster.

Example, a backend's worker loop in miniature:
    >>> results = []
    >>> chunk = Chunk(job_id=0, chunk_id=7, fn=pow, items=[(2, 3), (2, 4)], call=CallKind.STAR)
    >>> results.append(run_chunk(chunk, worker=0))
    >>> results[0].chunk_id, results[0].values, results[0].failures
    (7, [8, 16], {})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from shoal._wire.calls import CallKind
from shoal._wire.failure import Failure
from shoal._wire.labels import LABEL_AFTER, PROGRESS_EVERY, describe_arguments
from shoal.backends._lives import WorkerLife
from shoal.backends._records import (
    BackendStats,
    Chunk,
    ChunkResult,
    WorkerExit,
    WorkerHandle,
    WorkerSpec,
    all_failed,
    local_workers,
)
from shoal.backends._run_chunk import run_chunk

__all__ = [
    "LABEL_AFTER",
    "PROGRESS_EVERY",
    "Backend",
    "BackendFactory",
    "BackendStats",
    "CallKind",
    "Chunk",
    "ChunkResult",
    "Failure",
    "ResultSink",
    "WorkerExit",
    "WorkerHandle",
    "WorkerLife",
    "WorkerSpec",
    "all_failed",
    "describe_arguments",
    "local_workers",
    "run_chunk",
]


ResultSink = Callable[[ChunkResult], None]
"""Where a backend delivers results; thread-safe and callable from any thread. It never
blocks unless the backend says it has a :attr:`Backend.single_result_thread`."""


class Backend(Protocol):
    """What a Pool needs from a backend. Built by a :data:`BackendFactory`.

    Guarantees the Pool gives the backend:
        * ``submit`` is called with at most :attr:`max_in_flight` chunks outstanding (those
          submitted and not yet answered through the sink), so the backend never needs a
          queue of its own beyond that bound, and lazy inputs stay lazy upstream.
        * ``submit`` is never called after ``shutdown``.

    Guarantees the backend gives the Pool:
        * Exactly one :class:`ChunkResult` per submitted chunk, through the sink, unless the
          backend was shut down with ``cancel=True`` (then chunks not yet started are
          dropped silently and late results are ignored by the Pool).
        * A task's exception becomes a :class:`Failure` in the result, never an exception
          out of the backend; a worker that dies is replaced, and the tasks it lost come
          back as failures.
    """

    @property
    def workers(self) -> int:
        """How many tasks can run at the same time."""
        ...

    @property
    def max_in_flight(self) -> int:
        """How many chunks the Pool may keep submitted at once; enough that no worker waits
        for its next chunk (e.g. twice :attr:`workers`), few enough that cancelling is cheap
        and lazy inputs are not read far ahead."""
        ...

    @property
    def stops_running_tasks(self) -> bool:
        """Whether ``shutdown(cancel=True)`` stops tasks that are running (processes are
        killed). ``Pool.terminate`` then waits for the workers to be gone; otherwise
        (threads) it returns without waiting for tasks that may never end."""
        ...

    @property
    def single_result_thread(self) -> bool:
        """Whether the backend calls the sink from one thread only, never concurrently.
        The Pool then delivers results (and runs callbacks) right in that call, which saves
        a hand-over to a thread of its own; the sink may then take as long as a callback."""
        ...

    def submit(self, chunk: Chunk) -> None:
        """Queues ``chunk`` to run on some worker. Must not block (the Pool calls it while
        holding its own lock) and must not run the chunk in the calling thread."""
        ...

    def stats(self) -> BackendStats:
        """What the backend knows of its workers and memory (``Pool.stats``). The
        default (for a backend class that subclasses this protocol): nothing more than
        what the Pool counts from results."""
        return BackendStats()

    def handles(self) -> list[WorkerHandle]:
        """The workers running now (``Pool._pool``). Default: none listed."""
        return []

    def exit_results(self) -> list[WorkerExit]:
        """What ``spec.worker_exit`` gave in each worker that has left so far, in the
        order they left (``Pool.exit_results``). Default: none (a backend that does not
        run ``worker_exit`` refuses a spec that has one)."""
        return []

    def withdraw(self, chunk_id: int) -> bool:
        """Takes back a submitted chunk that no worker has started, if the backend can:
        true when it will never run (and no result will come for it), false when it may
        be running or done. Must not block (the Pool calls it while holding its lock).
        Default: false (a cancelled ``submit`` future whose chunk went out is not
        withdrawn; its result is dropped when it comes)."""
        return False

    def shutdown(self, *, cancel: bool) -> None:
        """Stops taking work and lets the workers exit; returns without waiting.

        ``cancel=False`` (``Pool.close`` then ``join``): every submitted chunk still runs and
        is answered. ``cancel=True`` (``Pool.terminate``): chunks not started are dropped;
        running ones are stopped if the backend can (processes are killed, threads cannot
        be). Calling it again, with either value, is allowed; ``cancel=True`` wins.
        """
        ...

    def join(self, timeout: float | None = None) -> bool:
        """Waits up to ``timeout`` seconds (``None``: no limit) for every worker to exit after
        ``shutdown``; true when they all did. Must return at once when called from one of
        the backend's own workers (a task or callback that ends its own pool)."""
        ...


BackendFactory = Callable[..., Backend]
"""Builds a running backend, as ``factory(spec, sink, **options)``, where ``options`` are
the Pool's keyword arguments that are the backend's own (the Pool passes none when it was
given none, so a factory that takes no options needs no ``**options``); one it does not
take is a ``TypeError`` that names it. Registered by name in ``shoal.backends``."""
