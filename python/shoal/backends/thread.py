"""The thread backend: tasks run on threads of this process, nothing is pickled.

Any callable works (lambdas, closures, bound methods, objects holding locks or sockets),
and tasks share the process's objects. Pure-Python tasks take turns on the GIL, so this
backend pays off for I/O and for code that releases the GIL (NumPy, compression, hashing).

Example:
    >>> import threading
    >>> from shoal.backends.base import CallKind
    >>> got = []
    >>> done = threading.Event()
    >>> def sink(result):
    ...     got.append(result.values)
    ...     done.set()
    >>> backend = ThreadBackend(WorkerSpec(processes=2), sink)
    >>> backend.submit(Chunk(0, 0, str.upper, ["a", "b"], CallKind.ONE))
    >>> done.wait(10)
    True
    >>> got
    [['A', 'B']]
    >>> backend.shutdown(cancel=False); backend.join(10)
    True
"""

from __future__ import annotations

import itertools
import queue
import threading
import time

from shoal._current_worker import IndexPool, become_thread_worker, leave_thread_worker
from shoal.backends._lives import WorkerLives
from shoal.backends.base import (
    BackendStats,
    Chunk,
    Failure,
    ResultSink,
    WorkerExit,
    WorkerHandle,
    WorkerSpec,
    all_failed,
    local_workers,
    run_chunk,
)

__all__ = ["ThreadBackend"]

# Chunks queued per worker: one running and one waiting, so a worker that finishes a
# chunk finds the next one already there while the Pool's feeder refills behind it.
_CHUNKS_PER_WORKER = 2


class ThreadBackend:
    """Runs chunks on ``spec.processes`` daemon threads, as ``multiprocessing.dummy`` does.

    Each thread runs ``spec.initializer(*spec.initargs)`` once before its first chunk. With
    ``spec.maxtasksperchild``, a thread that has run that many chunks starts its replacement
    and exits. If the initializer raises, that thread answers every chunk it takes with the
    initializer's error (as each task's failure), so the failure is seen rather than
    retried forever.

    Threads are daemons: an interpreter that exits with a task still running does not wait
    for it, and nothing can be forcibly stopped, so ``shutdown(cancel=True)`` drops queued
    chunks and lets running ones finish.

    Threads are named as the standard library names its own (``spec.role``): a pool's as
    ``multiprocessing.pool.ThreadPool``'s (``Thread-N (worker)``), an executor's as
    ``ThreadPoolExecutor``'s (``<thread_name_prefix>_N``, the prefix by default
    ``ThreadPoolExecutor-M`` counted with the standard executors).
    """

    def __init__(self, spec: WorkerSpec, sink: ResultSink, *, thread_name_prefix: str = "") -> None:
        self._count = local_workers(spec)
        self._names = _ThreadNames(spec.role, thread_name_prefix)
        self._spec = spec
        self._sink = sink
        self._tasks: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()
        # Guards _threads and _stopping, which workers change when they replace themselves.
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._stopping = False
        self._cancelled = False
        self._ids = itertools.count()
        self._indexes = IndexPool()  # shoal.current_worker().index of each thread
        self._lives = WorkerLives()
        self._exits: list[WorkerExit] = []  # what worker_exit gave, as threads left
        for _ in range(self._count):
            self._start_worker()

    @property
    def workers(self) -> int:
        """The number of worker threads."""
        return self._count

    @property
    def max_in_flight(self) -> int:
        """Two chunks per thread: one running, one ready to start."""
        return _CHUNKS_PER_WORKER * self._count

    @property
    def stops_running_tasks(self) -> bool:
        """False: a thread cannot be stopped from outside."""
        return False

    @property
    def single_result_thread(self) -> bool:
        """False: every worker thread answers for itself."""
        return False

    def submit(self, chunk: Chunk) -> None:
        """Queues ``chunk`` for the next free thread."""
        self._tasks.put(chunk)

    def stats(self) -> BackendStats:
        """Each worker index's life (threads share this process's memory: no arena)."""
        return BackendStats(self._lives.snapshot())

    def withdraw(self, chunk_id: int) -> bool:
        """False: a chunk handed over may already be running (at most two per thread
        are; the Pool keeps the rest, and can take those back itself)."""
        return False

    def shutdown(self, *, cancel: bool) -> None:
        """Tells every thread to exit once the queue is drained (or at once if ``cancel``)."""
        with self._lock:
            self._cancelled = self._cancelled or cancel
            if self._stopping:
                return
            self._stopping = True
        # One sentinel, behind every submitted chunk. Each worker that reads it puts it
        # back for the next and exits, so no count of workers (which changes while
        # workers replace themselves) is needed.
        self._tasks.put(None)

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the threads to exit; true when all did (this thread excepted)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()
        while True:
            with self._lock:
                pending = [t for t in self._threads if t is not me]
            if not pending:
                return True
            for thread in pending:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
                thread.join(remaining)
                if thread.is_alive():
                    return False

    def handles(self) -> list[WorkerHandle]:
        """The worker threads running now (threads have no pid of their own)."""
        with self._lock:
            return [WorkerHandle(t.name, None) for t in self._threads if t.is_alive()]

    def _start_worker(self, index: int | None = None) -> None:
        """Starts a worker thread as worker ``index`` (a successor takes its
        predecessor's; otherwise the lowest free one)."""
        worker = next(self._ids)
        if index is None:
            index = self._indexes.take()
        self._lives.started(index, None, index)
        thread = threading.Thread(
            target=self._work, args=(worker, index), name=self._names.next(worker), daemon=True
        )
        # Started under the lock, so that join() never sees a thread it cannot join yet.
        with self._lock:
            self._threads.add(thread)
            thread.start()

    def _work(self, worker: int, index: int) -> None:
        spec = self._spec
        become_thread_worker(index)
        broken: Failure | None = None
        if spec.initializer is not None:
            try:
                spec.initializer(*spec.initargs)
            except Exception as exc:
                broken = Failure.capture(exc)
        self._lives.ready(index)
        done = 0
        try:
            while True:
                chunk = self._tasks.get()
                if chunk is None:
                    # Every chunk was ahead of the sentinel and has been taken.
                    self._tasks.put(None)
                    self._say_farewell(index, broken)
                    return
                if self._cancelled:
                    continue
                if broken is not None:
                    result = all_failed(chunk.chunk_id, len(chunk.items), broken, index)
                else:
                    try:
                        result = run_chunk(chunk, index)
                    except BaseException as exc:
                        # SystemExit or KeyboardInterrupt raised by a task itself: it must
                        # not end this thread with the chunk unanswered (its caller would
                        # wait forever), so the chunk fails with it.
                        result = all_failed(
                            chunk.chunk_id, len(chunk.items), Failure.capture(exc), index
                        )
                self._sink(result)
                # Holds nothing of this chunk while it waits for the next: its arguments
                # and results would otherwise outlive the caller's use of them.
                del chunk, result
                done += 1
                if spec.maxtasksperchild is not None and done >= spec.maxtasksperchild:
                    self._say_farewell(index, broken)
                    if self._replace(index):
                        index = -1  # the successor has it
                    return
        finally:
            # The initializer's error, which every chunk was answered with: its traceback
            # holds this frame, which must not hold it back (a reference cycle).
            broken = None
            leave_thread_worker()
            if index >= 0:
                self._lives.ended(index, None)
                self._indexes.give_back(index)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _say_farewell(self, index: int, broken: Failure | None) -> None:
        """Runs ``worker_exit`` in this thread as it leaves (not after a failed
        initializer) and keeps what it gave."""
        hook = self._spec.worker_exit
        if hook is None or broken is not None:
            return
        try:
            outcome = WorkerExit(index, hook())
        except Exception as exc:
            outcome = WorkerExit(index, None, Failure.capture(exc))
        with self._lock:
            self._exits.append(outcome)

    def exit_results(self) -> list[WorkerExit]:
        """What ``worker_exit`` gave in each thread that has left, in the order they left."""
        with self._lock:
            return list(self._exits)

    def _replace(self, index: int) -> bool:
        """Starts this worker's successor, as worker ``index``; False if it starts none.
        Also while stopping without cancel: queued chunks must still run even if every
        worker reaches its limit. The successor is in the set of threads before this one
        leaves it, so ``join`` waits for it."""
        if self._cancelled:
            return False
        self._lives.ended(index, "maxtasksperchild")
        self._start_worker(index)
        return True


class _ThreadNames:
    """The names of one pool's threads, as the standard library would give them."""

    def __init__(self, role: str, prefix: str) -> None:
        self._role = role
        if role == "executor" and not prefix:
            from concurrent.futures import ThreadPoolExecutor

            # The standard executors' own count, so that no two executors share a prefix.
            prefix = f"ThreadPoolExecutor-{ThreadPoolExecutor._counter()}"  # type: ignore[attr-defined]
        self._prefix = prefix

    def next(self, worker: int) -> str:
        """The name of the pool's ``worker``-th thread (counting from 0)."""
        if self._role == "executor":
            return f"{self._prefix}_{worker}"
        # threading's own numbering of unnamed threads, and the name of the function
        # multiprocessing's pool threads run, as threading appends it.
        return f"{threading._newname('Thread-%d')} (worker)"  # type: ignore[attr-defined]
