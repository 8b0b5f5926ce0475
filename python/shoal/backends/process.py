"""The process backend: tasks run in worker processes, moved through shared memory.

Workers are forked by shoal's zygote by default (``shoal._process.zygote``), or spawned,
or forked from this process (``start_method=``). Each has a task ring and a result ring
in shared memory; the engine's supervisor thread (Rust) places chunks on them, collects
results and watches the workers' pidfds. This module pickles: a function once per pool
(cloudpickle, so lambdas, closures and ``__main__`` code work), each chunk's items, and
turns the engine's events into :class:`~shoal.backends.base.ChunkResult` objects.

Example:
    >>> import threading
    >>> from shoal.backends.base import CallKind
    >>> got, done = [], threading.Event()
    >>> def sink(result):
    ...     got.append(result.values)
    ...     done.set()
    >>> backend = ProcessBackend(WorkerSpec(processes=2), sink)
    >>> backend.submit(Chunk(0, 0, lambda x: x * 10, [1, 2], CallKind.ONE))
    >>> done.wait(30)
    True
    >>> got
    [[10, 20]]
    >>> backend.shutdown(cancel=False); backend.join(30)
    True
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Final

from shoal._process.identity import worker_names
from shoal._process.launch import WorkerSetup, check_start_method, launch
from shoal._process.messages import ChunkOutcome, payload_fields, read_farewell
from shoal._shoal import (
    EVENT_EXITED,
    EVENT_FAREWELL,
    EVENT_PROGRESS,
    EVENT_READY,
    EVENT_RESULT,
    EVENT_STOPPED,
    Arena,
    PoolEngine,
    WorkerExited,
)
from shoal._wire.buffers import (
    MAGIC,
    OutOfBand,
    check_arena_bytes,
    default_arena_bytes,
    pack,
    unpack,
)
from shoal._wire.calls import WATCHED
from shoal._wire.pickling import loads
from shoal.backends._function_table import FunctionTable
from shoal.backends._in_flight import InFlight, answer_with_failures, free_blocks, reclaim
from shoal.backends._process_exits import (
    ExitReason,
    OomKills,
    ask_zygote,
    exit_reason,
    lost_chunk_error,
    start_up_failure,
)
from shoal.backends._process_options import check_max_memory, check_prefetch, start_methods
from shoal.backends._process_roster import WorkerRoster
from shoal.backends._restarts import Replacements
from shoal.backends.base import (
    BackendStats,
    Chunk,
    ChunkResult,
    Failure,
    ResultSink,
    WorkerExit,
    WorkerHandle,
    WorkerSpec,
    all_failed,
    local_workers,
)
from shoal.errors import ShoalError

__all__ = ["OPTIONS", "RING_CAPACITY", "ProcessBackend"]

OPTIONS: Final = ("start_method", "arena_bytes", "prefetch", "context", "max_memory_per_child")
"""The keyword arguments of ``Pool`` this backend takes (see :class:`ProcessBackend`)."""

RING_CAPACITY: Final = 4 << 20
"""Bytes in each of a worker's two rings (backed by memory only as they are used). A
larger message still passes, in pieces."""

# The fewest chunks a worker owes when there are enough: one running, one waiting in its
# ring. The engine lets it owe more while chunks are short (its DepthGauge).
_DEPTH: Final = 2
# Chunks the Pool may hand over per worker: as many as it likes. Those a worker does not
# owe yet wait in the engine's queue (which places one the moment a worker answers, and
# can give one back: Future.cancel); the Pool's own queue would cost a hand-over per chunk.
_IN_FLIGHT_PER_WORKER: Final = 1 << 20


# Item sequences that pickle well as they are; anything else is sent as a list.
_AS_IS: Final = frozenset({list, tuple, range})


class ProcessBackend:
    """Runs chunks on ``spec.processes`` worker processes.

    Options (``Pool``'s keyword arguments): ``start_method``, ``arena_bytes``,
    ``prefetch``, ``context``, ``max_memory_per_child``; what each does is said in
    :mod:`shoal.backends._process_options`, which checks them.

    A worker that dies fails only the chunk it was running (``WorkerLostError``) and is
    replaced; the chunks it had not started go to other workers.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        sink: ResultSink,
        *,
        start_method: str | None = None,
        arena_bytes: int | None = None,
        prefetch: int | None = None,
        context: Any = None,
        max_memory_per_child: int | None = None,
    ) -> None:
        check_prefetch(prefetch)
        check_max_memory(max_memory_per_child)
        self._spec = spec
        self._count = local_workers(spec)
        self._sink = sink
        self._max_memory = max_memory_per_child
        start_method, names = start_methods(start_method, context)
        check_start_method(start_method)  # a wrong name fails before anything is made
        self._names = worker_names(names, spec.role)
        check_arena_bytes(arena_bytes)
        # Large buffers of arguments and results travel through this shared memory.
        self._arena = Arena(arena_bytes or default_arena_bytes())
        # Reused by every submit: the Pool calls submit under its lock, never concurrently.
        self._out_of_band = OutOfBand(self._arena)
        # Raises PicklingError here, in Pool(), if the initializer cannot be sent.
        self._setup = WorkerSetup(
            spec.initializer,
            spec.initargs,
            spec.maxtasksperchild,
            self._arena.fileno(),
            start_method,
            spec.worker_exit,
            self._names,
            max_memory_per_child,
        )
        self._method = self._setup.method
        if prefetch is None:
            self._engine = PoolEngine(_DEPTH, RING_CAPACITY)
        else:
            self._engine = PoolEngine(prefetch, RING_CAPACITY, fixed=True)
        self._functions = FunctionTable(self._engine.define, self._engine.forget)
        # Every chunk out with the engine, by id, until it is answered (or never will be).
        self._in_flight: dict[int, InFlight] = {}
        self._immediate: deque[ChunkResult] = deque()
        # Deaths while starting, and the error every chunk gets once start-up keeps
        # failing (see _on_exit); a replacement waiting out its pause.
        self._replacements = Replacements()
        self._oom_kills = OomKills()
        self._broken: Failure | None = None
        self._roster = WorkerRoster()
        try:
            for _ in range(self._count):
                self._launch()
        except BaseException:
            self._engine.terminate()
            self._setup.close()
            raise
        self._events = threading.Thread(target=self._pump, name="shoal-process-events", daemon=True)
        self._events.start()

    @property
    def workers(self) -> int:
        """The number of worker processes."""
        return self._count

    @property
    def max_in_flight(self) -> int:
        """Many chunks per worker: two in its ring, the rest queued in the engine."""
        return _IN_FLIGHT_PER_WORKER * self._count

    @property
    def stops_running_tasks(self) -> bool:
        """True: terminating kills the workers."""
        return True

    @property
    def single_result_thread(self) -> bool:
        """True: one thread turns the engine's events into results."""
        return True

    def submit(self, chunk: Chunk) -> None:
        """Pickles ``chunk`` and hands it to the engine; a chunk that cannot be pickled is
        answered at once with the error for each of its tasks."""
        entry = self._functions.entries.get(id(chunk.fn))
        func = self._functions.number(chunk.fn) if entry is None else entry[1]
        if self._broken is not None:
            func = self._broken
        if isinstance(func, Failure):
            self._answer_now(all_failed(chunk.chunk_id, len(chunk.items), func))
            return
        try:
            items = chunk.items
            # A slice of a range pickles as a range: three numbers, not a list of them.
            if type(items) not in _AS_IS:
                items = list(items)
            call = chunk.call.code
            if chunk.on_progress is not None:
                call |= WATCHED
            payload, blocks = pack(payload_fields(call, items), self._out_of_band)
        except Exception as exc:
            self._answer_now(all_failed(chunk.chunk_id, len(chunk.items), Failure.capture(exc)))
            return
        # One dict operation each side (submit, events thread): atomic, no lock needed.
        self._in_flight[chunk.chunk_id] = InFlight(
            len(chunk.items), chunk.timeout, blocks, chunk.on_progress, chunk.fn
        )
        self._engine.submit(chunk.chunk_id, func, payload, chunk.retries, chunk.timeout)

    def _break(self, error: ShoalError) -> None:
        """Stops starting workers and fails every chunk not answered yet, and every later
        one, with ``error``: the pool cannot run anything any more."""
        self._broken = Failure(error, "")
        for chunk_id, chunk in list(self._in_flight.items()):
            if self.withdraw(chunk_id):
                self._sink(all_failed(chunk_id, chunk.count, self._broken))

    def withdraw(self, chunk_id: int) -> bool:
        """Takes back a chunk still waiting in the engine's queue (no worker owes it)."""
        if not self._engine.withdraw(chunk_id):
            return False
        self._forget(chunk_id)
        return True

    def _forget(self, chunk_id: int) -> InFlight | None:
        """Drops what is kept of a chunk that will not be answered by a worker (taken
        back, or lost with its worker): its arguments' blocks are freed. Returns its
        record, when known."""
        chunk = self._in_flight.pop(chunk_id, None)
        if chunk is not None and chunk.blocks:
            free_blocks(self._arena, chunk.blocks)
        return chunk

    def stats(self) -> BackendStats:
        """Each worker index's life, and the shared-memory arena's counters, in bytes and
        blocks (capacity, in_use, peak, blocks, allocations, frees, refused)."""
        return BackendStats(self._roster.lives(), self._arena.stats())

    def _answer_now(self, result: ChunkResult) -> None:
        """Answers a chunk that never reaches a worker. Through the events thread, like
        every answer: the sink may not be called from inside ``submit``."""
        self._immediate.append(result)
        self._engine.wake()

    def shutdown(self, *, cancel: bool) -> None:
        """Stops the workers: after the queued chunks (``cancel=False``) or at once, killing
        them (``cancel=True``)."""
        self._replacements.stop(terminate=cancel)
        if cancel:
            self._engine.terminate()
        else:
            self._engine.close()

    def join(self, timeout: float | None = None) -> bool:
        """Waits for every worker to exit after :meth:`shutdown`."""
        if threading.current_thread() is self._events:
            return True
        self._events.join(timeout)
        return not self._events.is_alive()

    def _launch(self) -> None:
        index = self._roster.take_index()
        launched = time.monotonic()
        try:
            worker, pid, number = launch(
                self._engine, self._method, self._setup, self._spec.maxtasksperchild, index
            )
        except BaseException:
            self._roster.give_back(index)
            raise
        self._roster.started(worker, WorkerHandle(f"{self._names}-{number}", pid), index, launched)

    def handles(self) -> list[WorkerHandle]:
        """The workers running now: their names (as they call themselves), pids."""
        return self._roster.handles()

    def _pump(self) -> None:  # noqa: C901 (the result path, inline on purpose)
        """Turns the engine's events into results until every worker has exited."""
        try:
            next_events, sink, in_flight = self._engine.next_events, self._sink, self._in_flight
            arena = self._arena
            outcome: ChunkOutcome | None = None
            values: list[Any] | None = None
            while True:
                events = next_events(None)
                while self._immediate:
                    sink(self._immediate.popleft())
                for event in events:
                    if event[0] != EVENT_RESULT:
                        if event[0] == EVENT_EXITED:
                            self._on_exit(event[1])
                        elif event[0] == EVENT_READY:
                            self._roster.ready(event[1], event[2] / 1e6)
                        elif event[0] == EVENT_PROGRESS:
                            watched = in_flight.get(event[1])
                            if watched is not None and watched.watcher is not None:
                                watched.watcher(event[2])
                        elif event[0] == EVENT_FAREWELL:
                            self._roster.said_farewell(event[1], *read_farewell(event[2]))
                        elif event[0] == EVENT_STOPPED:
                            return
                        continue
                    # The common case inline (tens of thousands a second): every task of
                    # the chunk returned a value.
                    _, chunk_id, worker, payload = event
                    chunk = in_flight.pop(chunk_id, None)
                    if chunk is None:
                        continue
                    count = chunk.count
                    try:
                        decoded: Any
                        if payload.startswith(MAGIC):
                            decoded = unpack(payload, arena, own=True)[0]
                        else:
                            decoded = loads(payload)
                        outcome = ChunkOutcome._make(decoded)
                        kept = outcome.kept
                    except Exception as exc:  # (every task's error)
                        kept = []
                        sink(all_failed(chunk_id, count, Failure.capture(exc), worker))
                        continue
                    finally:
                        if chunk.blocks:
                            free_blocks(arena, chunk.blocks, kept)
                    if outcome.failures or len(outcome.values) != count:
                        sink(answer_with_failures(chunk_id, count, worker, outcome))
                        continue
                    values, elapsed, label = outcome.values, outcome.elapsed, outcome.label
                    sink(ChunkResult(chunk_id, values, {}, elapsed, worker, label))
                # Holds nothing while it waits: a result kept alive here would keep its
                # shared-memory blocks from the arena after the caller dropped it.
                events = []
                decoded = outcome = values = chunk = None
        finally:
            self._setup.close()

    def exit_results(self) -> list[WorkerExit]:
        """What ``worker_exit`` gave in each worker that has left, in the order they left
        (a killed worker, by ``terminate`` or otherwise, gives nothing)."""
        return self._roster.exit_results()

    def _on_exit(self, exited: WorkerExited) -> None:
        worker, pid, lost = exited.worker, exited.pid, exited.lost
        code, signal, how = exited.code, exited.signal, exited.how
        if code is None and signal is None and pid is not None and not exited.expected:
            # (Only the zygote knows how its child ended: a lost task's error says it,
            # and so do the start-up and memory rules below.)
            code, signal, how = ask_zygote(self._method, pid)
        reason = exit_reason(exited, code, self._max_memory)
        out_of_memory = self._oom_kills.explain(signal)
        restart = reason.restart_reason if exited.replace else None
        handle = self._roster.ended(worker, restart, code, signal)
        if pid is not None:
            reclaim(self._arena, pid, list(self._in_flight.values()))
        if lost is not None and (chunk := self._forget(lost)) is not None:
            error = lost_chunk_error(reason, chunk.limit, pid, (code, signal, how), out_of_memory)
            self._sink(all_failed(lost, chunk.count, Failure(error, ""), worker))
        if not exited.replace:
            return
        left_when_done = reason in (ExitReason.RETIRED, ExitReason.OUTGREW)
        started = exited.ready or left_when_done or exited.answered > 0 or lost is not None
        if not self._replacements.replace(self._launch, started=started, code=code, signal=signal):
            name = handle.name if handle is not None else "a worker"
            self._break(start_up_failure(self._spec.initializer, name, pid, how))
