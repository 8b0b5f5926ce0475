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

import enum
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from shoal._wire.labels import LABEL_AFTER, PROGRESS_EVERY, describe_arguments
from shoal._wire.namespaces import explain_name_error
from shoal.backends._lives import WorkerLife

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


class CallKind(enum.Enum):
    """How a chunk's ``fn`` is called on each of its items."""

    ONE = "one"
    """``fn(item)``: ``map``, ``imap``, ``imap_unordered``."""
    STAR = "star"
    """``fn(*item)``: ``starmap``."""
    APPLY = "apply"
    """``fn(*args, **kwargs)`` with ``item == (args, kwargs)``: ``apply`` and ``submit``."""


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
class Failure:
    """A task that raised.

    Attributes:
        exception: the exception the task raised. A backend that moves it between
            processes sends it pickled; the traceback is not part of a pickle, hence:
        traceback: the worker-side traceback, formatted where it happened. The Pool chains
            it as the exception's ``__cause__`` (a :class:`multiprocessing.pool.RemoteTraceback`).
    """

    exception: BaseException
    traceback: str

    @classmethod
    def capture(cls, exc: BaseException) -> Failure:
        """The failure for ``exc``, with its traceback formatted now (and a ``NameError``
        for a global left out of a function sent by value explained)."""
        explain_name_error(exc)
        return cls(exc, "".join(traceback.format_exception(exc)))

    def __reduce__(self) -> tuple[Any, tuple[BaseException, str, BaseException | None]]:
        """Pickles the exception's ``__cause__`` too, which pickling an exception drops
        (``raise ... from ...`` in a task is kept on every backend)."""
        return (_failure_with_cause, (self.exception, self.traceback, self.exception.__cause__))


def _failure_with_cause(exc: BaseException, text: str, cause: BaseException | None) -> Failure:
    if cause is not None and exc.__cause__ is None:
        exc.__cause__ = cause
    return Failure(exc, text)


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
    return ChunkResult(chunk.chunk_id, values, failures, elapsed, worker, label)


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
