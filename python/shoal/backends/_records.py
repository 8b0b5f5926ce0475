"""The records the Pool and its backends exchange: what workers are made of
(:class:`WorkerSpec`), the work (:class:`Chunk`), its outcome (:class:`ChunkResult`), and
what a backend reports of its workers. ``shoal.backends.base`` presents them with the
:class:`~shoal.backends.base.Backend` protocol.

Example:
    >>> from shoal._wire.failure import Failure
    >>> all_failed(7, 2, Failure(ValueError("no"), "")).values
    [None, None]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shoal._wire.calls import CallKind
from shoal._wire.failure import Failure
from shoal.backends._lives import WorkerLife

__all__ = [
    "BackendStats",
    "Chunk",
    "ChunkResult",
    "WorkerExit",
    "WorkerHandle",
    "WorkerSpec",
    "all_failed",
    "local_workers",
]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What every worker of a pool is made of; fixed for the pool's life.

    Attributes:
        processes: how many workers to keep running (at least 1); ``None``: the backend's
            own default (:func:`local_workers` for backends on this machine; a cluster's
            total threads for the cluster backends).
        initializer: called as ``initializer(*initargs)`` once in each new worker, before its
            first task, and again in every worker that replaces one.
        initargs: the initializer's arguments.
        maxtasksperchild: after this many chunks a worker exits and a fresh one (initializer
            included) takes its place; ``None`` keeps workers for the pool's life. As in
            ``multiprocessing``, a chunk counts as one task.
        worker_exit: called as ``worker_exit()`` in each worker as it leaves (the pool
            closes, or ``maxtasksperchild`` is reached; a worker that is killed cannot),
            unless its initializer raised; what it returns or raises is reported as a
            :class:`WorkerExit` (:meth:`Backend.exit_results`). A backend that cannot run
            it refuses it.
        role: what the pool stands in for, so that its workers are named as the standard
            library names its own: ``"pool"`` (``multiprocessing.Pool``: processes
            ``ForkPoolWorker-N``..., threads ``Thread-N (worker)``) or ``"executor"``
            (``concurrent.futures``: processes ``ForkProcess-N``..., threads
            ``ThreadPoolExecutor-M_N``). Backends whose workers are not theirs ignore it.

    What only one backend understands (the process backend's ``start_method``, a cluster's
    address) is not here: the Pool passes its extra keyword arguments to the backend's
    factory, which rejects those it does not know.
    """

    processes: int | None
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    maxtasksperchild: int | None = None
    worker_exit: Callable[[], object] | None = None
    role: Literal["pool", "executor"] = "pool"


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """What :attr:`WorkerSpec.worker_exit` gave in one worker as it left.

    Attributes:
        worker: the worker's index (``shoal.current_worker().index``).
        value: what it returned (``None`` when it raised).
        failure: what it raised, else ``None``.
    """

    worker: int
    value: Any
    failure: Failure | None = None


@dataclass(slots=True)
class WorkerHandle:
    """One running worker, as ``multiprocessing.Pool._pool`` lists its processes (code
    that reads worker pids from there finds them in a shoal Pool too).

    Example:
        >>> w = WorkerHandle("ForkPoolWorker-1", 4242)
        >>> w.is_alive(), w.exitcode
        (True, None)
    """

    name: str
    pid: int | None  # None for a worker that is not a process of its own
    exitcode: int | None = None  # once it ended: its exit code, or -signal

    def is_alive(self) -> bool:
        """Whether the worker had not ended when last seen."""
        return self.exitcode is None


@dataclass(slots=True)
class Chunk:
    """Consecutive tasks of one job (one ``map``, ``imap``, ``apply``... call), run together
    by one worker in order.

    Attributes:
        job_id: the job the chunk belongs to. Every chunk of a job carries the same ``fn``,
            so a backend that must send ``fn`` elsewhere can send it once per job.
        chunk_id: unique within the pool; the key of the matching :class:`ChunkResult`.
        fn: the user's callable, as given (the backend pickles it if it needs to).
        items: the tasks' arguments, one entry per call (see :class:`CallKind`).
        call: how ``fn`` is called on each item.
        timeout: seconds the chunk may run before its worker is killed and it fails with
            :class:`shoal.errors.TaskTimeoutError` (the Pool makes such chunks one task
            long); ``None``: no limit. Backends that cannot stop a task ignore it.
        retries: how many times to run the chunk again if its worker dies while running
            it, before it fails with :class:`shoal.errors.WorkerLostError`.
        on_progress: set when someone watches a progress bar: call it (from any thread)
            with how many of the chunk's tasks are done while it runs, every
            :data:`PROGRESS_EVERY` seconds or so, so that the bar moves inside a long
            chunk. Backends that cannot report leave it; the bar then moves per chunk.
    """

    job_id: int
    chunk_id: int
    fn: Callable[..., Any]
    items: Sequence[Any]
    call: CallKind
    timeout: float | None = None
    retries: int = 0
    on_progress: Callable[[int], None] | None = None


@dataclass(slots=True)
class ChunkResult:
    """The outcome of every task of one chunk.

    Attributes:
        chunk_id: the :attr:`Chunk.chunk_id` this answers.
        values: one entry per item, in order; ``None`` where the task failed.
        failures: the failed tasks, by their index in the chunk. A failure does not stop
            the rest of the chunk, so results never depend on how items were chunked.
        elapsed: seconds the worker spent on the chunk; the Pool sizes later chunks from it.
        worker: which worker ran it, for ``Pool.stats()``: any id stable for the
            worker's life (the :attr:`WorkerLife.workers` a backend reports name their
            indexes; a cluster backend's are its worker processes' pids); -1 when no
            worker ran it.
        label: :func:`describe_arguments` of its first task, when it ran for
            :data:`LABEL_AFTER` seconds or more; otherwise ``None``.
    """

    chunk_id: int
    values: list[Any]
    failures: dict[int, Failure] = field(default_factory=dict)
    elapsed: float = 0.0
    worker: int = -1
    label: str | None = None


@dataclass(slots=True)
class BackendStats:
    """What a backend reports for ``Pool.stats()``; the Pool adds what it counts itself
    (tasks, chunks and busy time per worker, the slowest tasks).

    Attributes:
        workers: the life of each worker index (start, start-up time, restarts and
            why), for a backend that starts and replaces its own workers; ``None`` for
            one that does not (a cluster's workers are the cluster's), whose workers the
            Pool then knows only from the results they send.
        arena: the shared-memory arena's counters, for a backend that has one.
    """

    workers: list[WorkerLife] | None = None
    arena: dict[str, int] | None = None


def all_failed(chunk_id: int, count: int, failure: Failure, worker: int = -1) -> ChunkResult:
    """The answer for a chunk of ``count`` tasks none of which could produce a value.

    >>> all_failed(7, 2, Failure(ValueError("no"), "")).failures.keys()
    dict_keys([0, 1])
    """
    return ChunkResult(chunk_id, [None] * count, dict.fromkeys(range(count), failure), 0.0, worker)


def local_workers(spec: WorkerSpec) -> int:
    """``spec.processes``, or this machine's usable CPUs for ``None``.

    >>> local_workers(WorkerSpec(processes=3))
    3
    """
    if spec.processes is not None:
        return spec.processes
    from shoal.pool._cpu import cpu_count

    return cpu_count()
