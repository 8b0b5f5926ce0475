"""The Ray backend: ``shoal.Pool(backend="ray")`` runs chunks as Ray tasks, with the
Pool's API, results and errors.

Options: ``address=`` connects to a running cluster (``"auto"`` for one started on this
machine with ``ray start``, ``"ray://host:10001"`` through Ray Client, ``"host:6379"``);
with none, the ``RAY_ADDRESS`` environment variable names it, as for Ray itself; with
neither, the pool starts a local Ray of ``processes`` CPUs and stops it with the pool. A
program that called ``ray.init()`` itself keeps its connection: pools use it and never
shut it down. ``processes=None`` on a cluster means its total CPUs.

How the Pool's contract maps onto Ray:

* Each chunk is one Ray task (not an actor: a task is rerun when its worker dies and never
  when the user's code raised, which is shoal's contract), asking one CPU.
* A job's function is pickled once (shoal's pickler) and put in Ray's object store once;
  every chunk of the job refers to it, and each worker process unpickles it once.
* The initializer runs once in each Ray worker process, before its first task of this
  pool; ``maxtasksperchild=n`` makes a worker process exit after ``n`` chunks of the pool
  (Ray's ``max_calls``), and the next one runs the initializer again.
* A task reports where it runs before it starts the chunk, so a worker that dies mid-task
  fails that task with ``shoal.WorkerLostError`` naming the node and process (or reruns it
  first with ``retries=N``), and ``task_timeout`` counts from the chunk's start and then
  force-cancels it (Ray kills the worker process; only that task fails, with
  ``shoal.TaskTimeoutError``).
* ``terminate()`` force-cancels every task the pool still has on the cluster.
* Arguments and results cross through Ray's object store: a large NumPy array arrives
  without a copy, and so read-only. A ``shoal.shared`` object is put there once per pool
  and read by every task from there, on any node.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Final

from shoal._wire.shared import Shared, placing
from shoal.backends._cluster.ray_session import connect, disconnect
from shoal.backends._cluster.remote import from_wire
from shoal.backends._cluster.shipping import KEEP, Functions, Shipped
from shoal.backends.base import (
    Backend,
    Chunk,
    ChunkResult,
    Failure,
    ResultSink,
    WorkerSpec,
    all_failed,
)
from shoal.errors import ShoalError, TaskTimeoutError, WorkerLostError

__all__ = ["OPTIONS", "RayBackend"]

OPTIONS: Final = ("address",)
"""The keyword arguments of ``Pool`` this backend takes."""

_IN_FLIGHT_PER_WORKER: Final = 3  # one running and two ready, per worker
_POLL: Final = 0.05  # seconds between looks for newly submitted chunks and timeouts


def _shared_from_store(reduced: tuple[Any, tuple[Any, ...]]) -> Any:
    """On a Ray worker: a ``shoal.shared`` handle over its object, from the object store
    (once per worker process: Ray keeps the object, this keeps the handle). ``reduced``
    is the object's reference as Ray's own pickler reduces it (see ``_place``)."""
    import ray

    from shoal._wire.shared import stand_in

    rebuild, args = reduced
    key = args[0]  # (the reference's binary id)
    with _shared_lock:
        handle = _shared_here.get(key)
        if handle is None:
            ref = rebuild(*args)
            handle = _shared_here[key] = stand_in(ray.get(ref), (_shared_from_store, (reduced,)))
            while len(_shared_here) > KEEP:
                _shared_here.popitem(last=False)
        return handle


_shared_here: OrderedDict[bytes, Any] = OrderedDict()
_shared_lock = threading.Lock()


def _chunk_stream(*args: Any) -> Any:
    """On a Ray worker: first where this runs (node, pid), then the chunk's result."""
    import os

    import ray

    from shoal.backends._cluster.remote import run_remote

    yield ray.util.get_node_ip_address(), os.getpid()  # type: ignore[no-untyped-call]
    yield run_remote(*args)


@dataclass(slots=True)
class _Running:
    chunk: Chunk
    shipped: Shipped
    node: str | None = None
    pid: int | None = None
    deadline: float | None = None


class RayBackend(Backend):
    """Runs chunks as Ray tasks (see the module's docstring)."""

    def __init__(self, spec: WorkerSpec, sink: ResultSink, *, address: str | None = None) -> None:
        if spec.worker_exit is not None:
            raise ValueError(
                "backend=\"ray\" cannot run worker_exit: Ray's worker processes are Ray's "
                "and do not leave with the pool; return what you need from tasks, or use "
                'backend="process"'
            )
        self._ray = ray = connect(address, spec)
        self._sink = sink
        self._lost: tuple[type[BaseException], ...] = (
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.OutOfMemoryError,
            ray.exceptions.ObjectLostError,
            ray.exceptions.LocalRayletDiedError,
        )
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self._workers = spec.processes or max(cpus, 1)
        # A pool smaller than the cluster holds its chunks back to run `processes` at once;
        # otherwise Ray's own CPU accounting is the limit, and chunks wait in Ray, ready
        # to start the moment a worker is free.
        small = self._workers < cpus
        self._on_cluster = self._workers if small else self.max_in_flight
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0, "num_returns": "streaming"}
        if spec.maxtasksperchild is not None:
            options["max_calls"] = spec.maxtasksperchild
        self._remote = ray.remote(**options)(_chunk_stream)
        self._key = uuid.uuid4().hex
        self._init: Any = None
        if spec.initializer is not None:
            from shoal._wire.pickling import dumps_callable

            self._init = ray.put(dumps_callable((spec.initializer, spec.initargs)))
        self._lock = threading.Condition()
        self._functions = Functions(ray.put)
        self._running: dict[Any, _Running] = {}  # the chunk's task (a generator) -> its state
        self._backlog: deque[_Running] = deque()
        self._placed: weakref.WeakKeyDictionary[Shared[Any], Any] = weakref.WeakKeyDictionary()
        self._stopping = False
        self._cancel = False
        self._left = False
        self._results = threading.Thread(target=self._deliver, name="shoal-ray", daemon=True)
        self._results.start()

    @property
    def workers(self) -> int:
        """Tasks that run at once: ``processes``, or the cluster's CPUs."""
        return self._workers

    @property
    def max_in_flight(self) -> int:
        """Chunks the Pool may hand over per worker: the rest wait in the Pool."""
        return _IN_FLIGHT_PER_WORKER * self._workers

    @property
    def stops_running_tasks(self) -> bool:
        """True: a force-cancel kills the Ray worker process running the task."""
        return True  # a force-cancel kills the worker process

    @property
    def single_result_thread(self) -> bool:
        """True: this backend delivers results from one thread of its own."""
        return True

    def submit(self, chunk: Chunk) -> None:
        """Starts ``chunk`` as one Ray task, or holds it back while the pool is full."""
        with self._lock:
            self._start(
                _Running(chunk, self._functions.for_job(chunk.job_id, chunk.fn, self._place))
            )

    def _place(self, handle: Shared[Any]) -> tuple[Any, tuple[Any, ...]]:
        # A shoal.shared object goes into Ray's object store once per pool; every task
        # that carries its handle carries only the reference.
        ref = self._placed.get(handle)
        if ref is None:
            ref = self._placed[handle] = self._ray.put(handle.value)
        # The reference may travel inside shoal's own pickle (a function that closes over
        # the handle), which Ray never sees: reduced by Ray's own pickler, it tells Ray
        # that it is borrowed out of band; pickled plainly it would never resolve.
        reduce = self._ray.cloudpickle.CloudPickler.dispatch[self._ray.ObjectRef]
        return (_shared_from_store, (reduce(ref),))

    def _start(self, running: _Running, *, first: bool = False) -> None:
        # Chunks beyond what may be on the cluster wait here, in the order they came (a
        # rerun goes first).
        if first:
            self._backlog.appendleft(running)
        else:
            self._backlog.append(running)
        self._launch()

    def _launch(self) -> None:
        while self._backlog and len(self._running) < self._on_cluster:
            running = self._backlog.popleft()
            chunk = running.chunk
            with placing(self._place):  # Ray pickles the arguments here, in this thread
                task = self._remote.remote(
                    self._key,
                    self._init,
                    running.shipped[0],
                    running.shipped[1],
                    chunk.chunk_id,
                    list(chunk.items),
                    chunk.call.code,
                )
            self._running[task] = running
            self._lock.notify()

    def _release(self, task: Any) -> None:
        with self._lock:
            self._running.pop(task, None)
            if not self._cancel:
                self._launch()

    def _deliver(self) -> None:
        ray = self._ray
        while True:
            with self._lock:
                while not self._running and not self._stopping:
                    self._lock.wait()
                if not self._running:
                    return
                tasks = list(self._running)
                deadlines = [r.deadline for r in self._running.values() if r.deadline]
            wait = _POLL if not deadlines else max(0.0, min(_POLL, min(deadlines) - time.time()))
            ready, _ = ray.wait(tasks, num_returns=1, timeout=wait)
            if ready and len(tasks) > 1:  # and whatever else is ready by now
                ready, _ = ray.wait(tasks, num_returns=len(tasks), timeout=0)
            finished: list[tuple[_Running, Any]] = []
            for task in ready:
                with self._lock:
                    running = self._running.get(task)
                if running is None:
                    continue
                if running.node is None:
                    self._started(task, running)
                    continue
                try:
                    ref = next(task)
                except StopIteration:
                    # The stream ended without its result: a task terminate() cancelled
                    # between the wait and here (then nobody waits for it), or one Ray
                    # ended for its own reasons, whose chunk fails saying so.
                    self._release(task)
                    ended = ShoalError("Ray ended the chunk's task before it sent its result")
                    self._answer_one(running, None, ended)
                    continue
                finished.append((running, ref))
                self._release(task)
            self._answer(finished)
            self._stop_overdue()

    def _started(self, task: Any, running: _Running) -> None:
        try:
            running.node, running.pid = self._ray.get(next(task))
        except Exception as exc:  # died before it began: lost like any other death
            self._release(task)
            self._answer_one(running, None, exc)
            return
        if running.chunk.timeout is not None:
            running.deadline = time.time() + running.chunk.timeout

    def _answer(self, finished: list[tuple[_Running, Any]]) -> None:
        if not finished:
            return
        try:  # one round trip for every chunk that finished by now
            values = self._ray.get([ref for _, ref in finished])
        except Exception:
            values = None  # each is read on its own, which says what went wrong
        for index, (running, ref) in enumerate(finished):
            if values is not None:
                self._answer_one(running, from_wire(values[index]), None)
                continue
            try:
                self._answer_one(running, from_wire(self._ray.get(ref)), None)
            except Exception as exc:
                self._answer_one(running, None, exc)

    def _answer_one(
        self, running: _Running, result: ChunkResult | None, error: BaseException | None
    ) -> None:
        chunk = running.chunk
        if self._cancel:
            return
        if isinstance(error, self._lost):
            if chunk.retries > 0:
                chunk.retries -= 1
                with self._lock:
                    self._start(_Running(chunk, running.shipped), first=True)
                return
            where = f" on node {running.node}" if running.node else ""
            how = f"the Ray worker{where} died ({str(error).splitlines()[0]})"
            failure = Failure(WorkerLostError(running.pid, None, None, how), "")
            result = all_failed(chunk.chunk_id, len(chunk.items), failure)
        elif error is not None:
            result = all_failed(chunk.chunk_id, len(chunk.items), Failure.capture(error))
        if result is not None:
            self._sink(result)

    def _stop_overdue(self) -> None:
        now = time.time()
        with self._lock:
            overdue = [(t, r) for t, r in self._running.items() if r.deadline and r.deadline <= now]
            for task, _ in overdue:
                del self._running[task]
            if not self._cancel:
                self._launch()
        for task, running in overdue:
            self._ray.cancel(task, force=True)
            limit = running.chunk.timeout or 0.0
            failure = Failure(TaskTimeoutError(limit, running.pid), "")
            self._sink(all_failed(running.chunk.chunk_id, len(running.chunk.items), failure))

    def shutdown(self, *, cancel: bool) -> None:
        """Takes no more work; with ``cancel``, force-cancels every running task."""
        with self._lock:
            self._stopping = True
            if cancel and not self._cancel:
                self._cancel = True
                tasks = list(self._running)
                self._running.clear()
                self._backlog.clear()
                for task in tasks:
                    self._ray.cancel(task, force=True)
            self._lock.notify()

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the result thread to finish every answer."""
        if threading.current_thread() is self._results:
            return False
        self._results.join(timeout)
        if self._results.is_alive():
            return False
        with self._lock:
            left, self._left = self._left, True
        if not left:
            self._functions.clear()
            self._init = None
            disconnect(self._ray)
        return True
