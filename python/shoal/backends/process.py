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

import contextlib
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, cast

from shoal._current_worker import IndexPool
from shoal._process.chunks import CALL_APPLY, CALL_ONE, CALL_STAR, CALL_WATCHED
from shoal._process.identity import program_start_method, worker_names
from shoal._process.launch import WorkerSetup, check_start_method, launch
from shoal._process.zygote import shared_zygote
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
    describe_exit,
)
from shoal._wire.buffers import (
    MAGIC,
    OutOfBand,
    check_arena_bytes,
    default_arena_bytes,
    pack,
    unpack,
)
from shoal._wire.pickling import loads
from shoal.backends._function_table import FunctionTable
from shoal.backends._lives import RestartReason, WorkerLives
from shoal.backends._restarts import GIVE_UP_AFTER, Restarts, oom_kills
from shoal.backends.base import (
    BackendStats,
    CallKind,
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
from shoal.errors import ShoalError, TaskTimeoutError, WorkerLostError

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

    Options (``Pool``'s keyword arguments): ``start_method``: ``"zygote"`` (default:
    forked by shoal's zygote, a fresh interpreter that was never given any threads),
    ``"spawn"`` (a new interpreter per worker, slower to start) or ``"fork"`` (a copy of
    this process, with everything it has loaded; unsafe if other threads hold locks, as
    with multiprocessing). ``arena_bytes``: the most shared memory the pool may hold for
    large buffers (numpy arrays and other protocol-5 buffers of 64 KiB or more in
    arguments and results). They cross with one copy into shared memory, and arrays
    arrive read-only, built over it (``array.copy()`` makes a private, writable one).
    Past the budget they are copied through the pool's rings, with a warning. ``None``:
    half of this machine's memory; it is used only as buffers travel, and blocks held by
    results stay valid after the pool ends. ``prefetch``: how many chunks a worker holds
    at once, the one it runs included; ``None`` (the default) adapts it to how long
    chunks take (2 while they are slow, up to 64 while they are tiny); ``1`` gives a
    worker its next chunk only once it has answered the last, so no task ever waits
    behind a slow one on a busy worker while another is free (a round trip per chunk).
    ``context``: a multiprocessing context (``multiprocessing.Pool``'s fifth argument,
    ``ProcessPoolExecutor``'s ``mp_context``): its ``fork`` forks the workers from this
    process, its ``spawn`` and ``forkserver`` use the zygote (unless ``start_method``
    says otherwise). ``max_memory_per_child``: bytes of resident memory past which a
    worker, after a chunk, leaves and is replaced (as Celery's
    ``worker_max_memory_per_child``, for tasks that leak). Workers are named as
    multiprocessing names them for the context's
    method, or else for the one the program set or this Python's default
    (``ForkPoolWorker-N``; ``ForkProcess-N`` for an executor).

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
        if prefetch is not None and (
            isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1
        ):
            raise ValueError(f"prefetch must be a positive int or None, not {prefetch!r}")
        self._spec = spec
        self._count = local_workers(spec)
        self._sink = sink
        if max_memory_per_child is not None and (
            isinstance(max_memory_per_child, bool)
            or not isinstance(max_memory_per_child, int)
            or max_memory_per_child <= 0
        ):
            raise ValueError(
                "max_memory_per_child must be a positive number of bytes or None, not "
                f"{max_memory_per_child!r}"
            )
        self._max_memory = max_memory_per_child
        start_method, names = _methods(start_method, context)
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
        # Per chunk in flight: its number of tasks; and the time limits of those that
        # have one. (Plain ints: nothing for the garbage collector to track.)
        self._sizes: dict[int, int] = {}
        self._limits: dict[int, float] = {}
        # The arena blocks holding each chunk's large arguments: freed when it is answered
        # (but for those a worker kept, which it then frees itself).
        self._arg_blocks: dict[int, list[int]] = {}
        # The progress hooks of chunks a bar watches (Chunk.on_progress).
        self._watchers: dict[int, Callable[[int], None]] = {}
        self._immediate: deque[ChunkResult] = deque()
        self._lock = threading.Lock()
        self._stopping = False
        self._terminating = False
        # Deaths while starting, and the error every chunk gets once start-up keeps
        # failing (see _on_exit); a replacement waiting out its pause.
        self._restarts = Restarts()
        self._oom_kills = oom_kills()  # the system's count, to tell an OOM kill
        self._broken: Failure | None = None
        self._pending_launch: threading.Timer | None = None
        # The workers running now, by engine id (Pool._pool), and their indexes.
        self._handles: dict[int, WorkerHandle] = {}
        self._indexes = IndexPool()
        self._index_of: dict[int, int] = {}
        self._lives = WorkerLives()
        self._exits: list[WorkerExit] = []  # what worker_exit gave, as workers left
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
        functions = self._functions
        entry = functions.entries.get(id(chunk.fn))
        if entry is None:
            func = functions.number(chunk.fn)
            weak = functions.is_held_weakly(chunk.fn)
        else:
            func, weak = entry[1], type(entry[0]) is weakref.ref
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
            call = chunk.call
            # (An Enum's hash is computed in Python: an identity test is cheaper.)
            code = (
                CALL_APPLY
                if call is CallKind.APPLY
                else CALL_ONE
                if call is CallKind.ONE
                else CALL_STAR
            )
            if chunk.on_progress is not None:
                code |= CALL_WATCHED
            payload, blocks = pack((code, items), self._out_of_band)
        except Exception as exc:
            self._answer_now(all_failed(chunk.chunk_id, len(chunk.items), Failure.capture(exc)))
            return
        # One dict operation each side (submit, events thread): atomic, no lock needed.
        self._sizes[chunk.chunk_id] = len(chunk.items)
        if chunk.timeout is not None:
            self._limits[chunk.chunk_id] = chunk.timeout
        if blocks:
            self._arg_blocks[chunk.chunk_id] = blocks
        if weak:  # (kept alive until the chunk is answered)
            functions.hold(chunk.chunk_id, chunk.fn)
        if chunk.on_progress is not None:
            self._watchers[chunk.chunk_id] = chunk.on_progress
        self._engine.submit(chunk.chunk_id, func, payload, chunk.retries, chunk.timeout)

    def _break(self, error: ShoalError) -> None:
        """Stops starting workers and fails every chunk not answered yet, and every later
        one, with ``error``: the pool cannot run anything any more."""
        self._broken = Failure(error, "")
        for chunk_id, count in list(self._sizes.items()):
            if self.withdraw(chunk_id):
                self._sink(all_failed(chunk_id, count, self._broken))

    def withdraw(self, chunk_id: int) -> bool:
        """Takes back a chunk still waiting in the engine's queue (no worker owes it)."""
        if not self._engine.withdraw(chunk_id):
            return False
        self._forget(chunk_id)
        return True

    def _forget(self, chunk_id: int) -> tuple[int | None, float | None]:
        """Drops what is kept of a chunk that will not be answered by a worker (taken
        back, or lost with its worker): its arguments' blocks are freed. Returns its
        number of tasks and its time limit, when known."""
        self._free_arguments(chunk_id)
        self._functions.release(chunk_id)
        self._watchers.pop(chunk_id, None)
        return self._sizes.pop(chunk_id, None), self._limits.pop(chunk_id, None)

    def stats(self) -> BackendStats:
        """Each worker index's life, and the shared-memory arena's counters, in bytes and
        blocks (capacity, in_use, peak, blocks, allocations, frees, refused)."""
        return BackendStats(self._lives.snapshot(), self._arena.stats())

    def _free_arguments(self, chunk_id: int, kept: Iterable[int] = ()) -> None:
        """Frees the blocks of a chunk's large arguments, but those a worker kept."""
        blocks = self._arg_blocks.pop(chunk_id, None)
        if not blocks:
            return
        for offset in set(blocks).difference(kept):
            with contextlib.suppress(ValueError):
                self._arena.free(offset)

    def _answer_now(self, result: ChunkResult) -> None:
        """Answers a chunk that never reaches a worker. Through the events thread, like
        every answer: the sink may not be called from inside ``submit``."""
        self._immediate.append(result)
        self._engine.wake()

    def shutdown(self, *, cancel: bool) -> None:
        """Stops the workers: after the queued chunks (``cancel=False``) or at once, killing
        them (``cancel=True``)."""
        with self._lock:
            self._stopping = True
            # After close, queued chunks still need workers: only terminate ends the
            # replacing of workers.
            self._terminating = cancel
            if cancel and self._pending_launch is not None:
                self._pending_launch.cancel()
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
        index = self._indexes.take()
        launched = time.monotonic()
        try:
            worker, pid, number = launch(
                self._engine, self._method, self._setup, self._spec.maxtasksperchild, index
            )
        except BaseException:
            self._indexes.give_back(index)
            raise
        with self._lock:
            self._handles[worker] = WorkerHandle(f"{self._names}-{number}", pid)
            self._index_of[worker] = index
        self._lives.started(index, pid, worker, launched)

    def handles(self) -> list[WorkerHandle]:
        """The workers running now: their names (as they call themselves), pids."""
        with self._lock:
            return list(self._handles.values())

    def _ask_zygote(self, pid: int) -> tuple[int | None, int | None, str | None]:
        """How a worker of the zygote ended: the zygote reaped it, so only it knows."""
        if self._method != "zygote":
            return None, None, None
        try:
            status = shared_zygote().exit_status(pid)
        except Exception:
            status = None
        if status is None:
            return None, None, None
        return describe_exit(status)

    def _pump(self) -> None:  # noqa: C901 (the result path, inline on purpose)
        """Turns the engine's events into results until every worker has exited."""
        try:
            next_events, sink, sizes = self._engine.next_events, self._sink, self._sizes
            held = self._functions.held
            limits, arg_blocks, arena = self._limits, self._arg_blocks, self._arena
            watchers = self._watchers
            while True:
                events = next_events(None)
                while self._immediate:
                    sink(self._immediate.popleft())
                for event in events:
                    if event[0] != EVENT_RESULT:
                        if event[0] == EVENT_EXITED:
                            self._on_exit(event[1])
                        elif event[0] == EVENT_READY:
                            self._ready(event[1], event[2] / 1e6)
                        elif event[0] == EVENT_PROGRESS:
                            if (watcher := watchers.get(event[1])) is not None:
                                watcher(event[2])
                        elif event[0] == EVENT_FAREWELL:
                            self._on_farewell(*event[1:])
                        elif event[0] == EVENT_STOPPED:
                            return
                        continue
                    # The common case inline (tens of thousands a second): every task of
                    # the chunk returned a value. Anything else takes _on_result.
                    _, chunk_id, worker, payload = event
                    count = sizes.pop(chunk_id, None)
                    if count is None:
                        continue
                    if limits:
                        limits.pop(chunk_id, None)
                    if held:
                        held.pop(chunk_id, None)
                    if watchers:
                        watchers.pop(chunk_id, None)
                    try:
                        decoded: Any
                        if payload.startswith(MAGIC):
                            decoded = unpack(payload, arena, own=True)[0]
                        else:
                            decoded = loads(payload)
                        values, wire, elapsed, kept, label = decoded
                    except Exception as exc:
                        kept = ()
                        self._on_result(chunk_id, count, worker, exc, None, 0.0, None)
                        continue
                    finally:
                        if arg_blocks:
                            self._free_arguments(chunk_id, kept)
                    if wire or len(values) != count:
                        self._on_result(chunk_id, count, worker, values, wire, elapsed, label)
                    else:
                        sink(ChunkResult(chunk_id, values, {}, elapsed, worker, label))
                # Holds nothing while it waits: a result kept alive here would keep its
                # shared-memory blocks from the arena after the caller dropped it.
                events = []
                decoded = values = wire = None
        finally:
            self._setup.close()

    def exit_results(self) -> list[WorkerExit]:
        """What ``worker_exit`` gave in each worker that has left, in the order they left
        (a killed worker, by ``terminate`` or otherwise, gives nothing)."""
        with self._lock:
            return list(self._exits)

    def _on_farewell(self, worker: int, payload: bytes) -> None:
        with self._lock:
            index = self._index_of.get(worker, -1)
        try:
            value, failed = cast("tuple[Any, Any]", loads(payload))
            failure = None if failed is None else _failure(*failed)
        except Exception as exc:
            value, failure = None, Failure.capture(exc)
        with self._lock:
            self._exits.append(WorkerExit(index, value, failure))

    def _ready(self, worker: int, when: float) -> None:
        with self._lock:
            index = self._index_of.get(worker)
        if index is not None:
            self._lives.ready(index, when)

    def _on_result(
        self,
        chunk_id: int,
        count: int,
        worker: int,
        values: Any,
        wire: Any,
        elapsed: float,
        label: str | None,
    ) -> None:
        """A chunk whose result could not be read (``values`` is then the error) or in
        which some task failed."""
        if isinstance(values, BaseException):
            self._sink(all_failed(chunk_id, count, Failure.capture(values), worker))
            return
        failures = {i: _failure(*fields) for i, fields in wire.items()}
        if len(values) != count:
            # The worker could not read the chunk at all: the error is every task's.
            failure = failures.get(0) or Failure.capture(ShoalError("a malformed result"))
            self._sink(all_failed(chunk_id, count, failure, worker))
            return
        self._sink(ChunkResult(chunk_id, values, failures, elapsed, worker, label))

    def _on_exit(self, exited: WorkerExited) -> None:
        worker, pid, lost, replace = exited.worker, exited.pid, exited.lost, exited.replace
        code, signal, how = exited.code, exited.signal, exited.how
        expected, timed_out, answered = exited.expected, exited.timed_out, exited.answered
        if code is None and signal is None and pid is not None and not expected:
            # (Only the zygote knows how its child ended: a lost task's error says it,
            # and so do the start-up and memory rules below.)
            code, signal, how = self._ask_zygote(pid)
        with self._lock:
            handle = self._handles.pop(worker, None)
            index = self._index_of.pop(worker, None)
        # A worker that left between tasks, unasked, with exit code 0: its memory had
        # passed max_memory_per_child. One killed as the system's OOM kill count rose:
        # most likely the OOM killer.
        outgrew = self._max_memory is not None and code == 0 and not expected and lost is None
        out_of_memory = False
        if signal == 9:
            count = oom_kills()
            out_of_memory = None not in (count, self._oom_kills) and count != self._oom_kills
            self._oom_kills = count
        if index is not None:
            reason: RestartReason = (
                "timeout"
                if timed_out
                else "maxtasksperchild"
                if expected
                else "max_memory_per_child"
                if outgrew
                else "died"
            )
            self._lives.ended(index, reason if replace else None)
            self._indexes.give_back(index)  # for the replacement
        if handle is not None:
            # multiprocessing's convention: the exit code, or minus the killing signal.
            handle.exitcode = code if code is not None else -signal if signal else 0
        if pid is not None:
            # Whatever it still owned: results it never finished sending, arguments it
            # kept. (Results it did send were adopted when they were read, before this.)
            # But arguments it took over and then died before answering belong to a
            # chunk that runs again elsewhere: those are taken back first.
            unanswered = [offset for blocks in list(self._arg_blocks.values()) for offset in blocks]
            with contextlib.suppress(ValueError, OSError):
                if unanswered:
                    self._arena.reclaim(pid, unanswered)
                self._arena.free_owned_by(pid)
        if lost is not None:
            count, limit = self._forget(lost)
            if count is not None:
                error: ShoalError
                if timed_out and limit is not None:
                    error = TaskTimeoutError(limit, pid)
                else:
                    error = WorkerLostError(pid, code, signal, how, out_of_memory)
                self._sink(all_failed(lost, count, Failure(error, ""), worker))
        if not replace:
            return
        started = exited.ready or expected or outgrew or answered > 0 or lost is not None
        pause = self._restarts.pause_after(started=started, code=code, signal=signal)
        if pause is None:
            self._break(self._start_up_fails(handle, pid, how))
            return
        if pause:
            # Died starting up: a pause, growing, before the next try.
            with self._lock:
                if self._terminating:
                    return
                self._pending_launch = threading.Timer(pause, self._relaunch)
                self._pending_launch.daemon = True
                self._pending_launch.start()
            return
        self._relaunch()

    def _relaunch(self) -> None:
        """Starts a worker in the place of one that exited (unless the pool was terminated)."""
        with self._lock:
            stopping, terminating = self._stopping, self._terminating
        if terminating:
            return
        try:
            self._launch()
        except Exception:
            if not stopping:
                # The pool carries on with one worker fewer; the next exit tries again.
                traceback.print_exc()

    def _start_up_fails(
        self, handle: WorkerHandle | None, pid: int | None, how: str | None
    ) -> ShoalError:
        """The error of a pool that stopped starting workers: which died, how, what to do."""
        name = handle.name if handle is not None else "a worker"
        initializer = self._spec.initializer
        fix = (
            f"its initializer ({getattr(initializer, '__qualname__', repr(initializer))}) may "
            "be ending or crashing the process: call it in this process to see why"
            if initializer is not None
            else "something the worker imports at start may be ending or crashing the process"
        )
        return ShoalError(
            f"{GIVE_UP_AFTER} workers in a row died starting up, by their own hand (the last, "
            f"{name} (pid {pid}), {how or 'exited'}, before it was ready): the pool stopped "
            f"starting workers and fails what is left; {fix}"
        )


def _methods(start_method: str | None, context: Any) -> tuple[str | None, str]:
    """How the workers start (``start_method``, or what ``context`` asks for), and the
    multiprocessing start method they are named after."""
    if context is None:
        names = start_method if start_method in ("fork", "spawn") else program_start_method()
        return start_method, names
    getter = getattr(context, "get_start_method", None)
    if not callable(getter):
        raise TypeError(f"context must be a multiprocessing context, not {context!r}")
    method = str(getter())
    if start_method is None:
        from shoal._mp.context import pool_method_for

        start_method = pool_method_for(method)
    return start_method, method


def _failure(exc: BaseException, text: str, cause: BaseException | None = None) -> Failure:
    # Pickling drops __cause__; the worker sends it alongside, when it can.
    if cause is not None and exc.__cause__ is None:
        exc.__cause__ = cause
    return Failure(exc, text)
