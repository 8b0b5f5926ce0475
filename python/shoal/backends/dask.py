"""The Dask backend: ``shoal.Pool(backend="dask")`` runs chunks as tasks on a Dask
cluster (``distributed``), with the Pool's API, results and errors.

Options: ``address=`` connects to a running scheduler (failing within
``CONNECT_TIMEOUT`` seconds, naming it, when it cannot be reached); ``client=`` uses an
existing ``distributed.Client`` (the pool never closes it); with neither, the pool starts
a ``LocalCluster`` of ``processes`` single-threaded worker processes and closes it with
the pool. ``processes=None`` on a cluster means its total threads.

How the Pool's contract maps onto Dask:

* A job's function is pickled once (shoal's pickler, as for worker processes). A small
  pickle (up to 64 KiB: functions by reference, most closures) rides in each chunk's
  task; a larger one becomes one task on the cluster that the job's chunks depend on.
  Each cluster worker process unpickles it once.
* The initializer runs once in each cluster worker process, before its first task of
  this pool (the worker remembers the pools it has run it for); if it raises, every task
  of the pool on that worker fails with its error.
* A cluster worker that dies mid-task fails that task with ``shoal.WorkerLostError``
  naming the worker (the embedded cluster's scheduler gives up on a task at its first
  death: ``allowed-failures`` 0), or runs it again first with ``retries=N``. On a cluster
  of your own, its scheduler's ``allowed-failures`` decides how often Dask reruns it
  before shoal hears of it.
* Dask cannot stop a running task: ``task_timeout`` is refused, and ``terminate()``
  cancels what the cluster has not started (the embedded cluster's workers are then
  closed with it).
* ``maxtasksperchild`` is refused: a pool does not own a cluster's workers.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import queue
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any, Final

from shoal._wire.shared import Shared, placing
from shoal.backends._cluster.dask_session import (
    CONNECT_TIMEOUT,
    EmbeddedCluster,
    connect,
    distributed_module,
)
from shoal.backends._cluster.dask_worker import identity, run_with_shared, shared_from_cluster
from shoal.backends._cluster.remote import from_wire
from shoal.backends._cluster.shipping import KEEP, Functions, Shipped
from shoal.backends.base import (
    Backend,
    Chunk,
    Failure,
    ResultSink,
    WorkerSpec,
    all_failed,
    local_workers,
)
from shoal.errors import WorkerLostError

__all__ = ["CONNECT_TIMEOUT", "OPTIONS", "DaskBackend"]

OPTIONS: Final = ("address", "client")
"""The keyword arguments of ``Pool`` this backend takes."""

_RESHIP_LIMIT: Final = 5  # sends of a chunk whose shared objects the cluster lost
_IN_FLIGHT_PER_WORKER: Final = 8  # enough queued work to hide a round trip of ~10 ms
# Seconds a scatter of a shoal.shared object may take: Dask's own can wait for ever when
# a worker dies while the data is sent to it.
_SCATTER_TIMEOUT: Final = 10.0


def _forget(*tables_and_key: Any) -> None:
    """Drops ``key`` from each table (a handle's entries, once the handle is gone)."""
    *tables, key = tables_and_key
    for table in tables:
        table.pop(key, None)


class DaskBackend(Backend):
    """Runs chunks as Dask tasks (see the module's docstring)."""

    def __init__(
        self, spec: WorkerSpec, sink: ResultSink, *, address: str | None = None, client: Any = None
    ) -> None:
        distributed = distributed_module()
        if spec.maxtasksperchild is not None:
            raise ValueError(
                'backend="dask" cannot replace a cluster\'s workers: maxtasksperchild is not '
                "supported there"
            )
        if spec.worker_exit is not None:
            raise ValueError(
                'backend="dask" cannot run worker_exit: a cluster\'s workers are the '
                "cluster's and do not leave with the pool; return what you need from tasks, "
                'or use backend="process"'
            )
        if address is not None and client is not None:
            raise ValueError("give the dask backend an address or a client, not both")
        self._sink = sink
        self._cluster: EmbeddedCluster | None = None
        self._owns_client = client is None
        if client is None:
            client, self._cluster = connect(distributed, local_workers(spec), address)
        self._client = client
        self._killed_worker: type[BaseException] = distributed.scheduler.KilledWorker
        threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        self._workers = spec.processes or max(threads, 1)
        self._key = uuid.uuid4().hex
        # A large function pickle becomes a task of its own, which Dask can run again if
        # the workers holding its result die (shoal.backends._cluster.shipping).
        self._functions = Functions(
            lambda blob: client.submit(
                identity, blob, key=f"shoal-fn-{uuid.uuid4().hex}", pure=False
            )
        )
        self._init: Any = None
        self._scattered: weakref.WeakKeyDictionary[Shared[Any], Any] = weakref.WeakKeyDictionary()
        # The scattered futures the pickle being made names (see _place), and those that
        # each job's function and the initializer name: a task that needs one names it as
        # a dependency, so Dask fails the task if its data is lost rather than leave a
        # fetch waiting for ever.
        self._naming: list[Any] | None = None
        self._job_shared: OrderedDict[int, list[Any]] = OrderedDict()
        self._init_shared: list[Any] = []
        # A scattered object's name (its first key, which the pickles carry) -> the
        # handle it came from and the future holding it now: when every worker holding
        # it died, it is scattered again and tasks name the new future by the old name.
        self._sources: dict[str, weakref.ref[Shared[Any]]] = {}
        self._holding: dict[str, Any] = {}
        # Chunk id -> how often it was sent again because its shared objects were lost.
        self._reshipped: dict[int, int] = {}
        if spec.initializer is not None:
            from shoal._wire.pickling import dumps_callable

            with self._noting(self._init_shared), placing(self._place):
                blob = dumps_callable((spec.initializer, spec.initargs))
            self._init = self._functions.blob(blob)[1]
        self._lock = threading.Lock()
        # Future key -> its chunk, the job's shipped function, the chunk's future, the
        # names of the shared objects it reads.
        self._running: dict[str, tuple[Chunk, Shipped, Any, list[str]]] = {}
        self._keys = itertools.count()
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopping = False
        self._cancelled = False
        self._results = threading.Thread(target=self._deliver, name="shoal-dask", daemon=True)
        self._results.start()

    @property
    def workers(self) -> int:
        """Tasks that run at once: ``processes``, or the cluster's threads."""
        return self._workers

    @property
    def max_in_flight(self) -> int:
        """Chunks the Pool may hand over per worker: the rest wait in the Pool."""
        return _IN_FLIGHT_PER_WORKER * self._workers

    @property
    def stops_running_tasks(self) -> bool:
        """Dask cannot stop a running task; but the pool's own cluster is closed with
        it, its workers and their tasks with it."""
        return self._cluster is not None

    @property
    def single_result_thread(self) -> bool:
        """True: this backend delivers results from one thread of its own."""
        return True  # results are delivered by this backend's one thread

    def submit(self, chunk: Chunk) -> None:
        """Sends ``chunk`` to the cluster as one Dask task (its function once per job)."""
        if chunk.timeout is not None:
            self._sink(
                all_failed(
                    chunk.chunk_id,
                    len(chunk.items),
                    Failure(
                        ValueError(
                            'backend="dask" cannot stop a running task: task_timeout is not '
                            "supported there"
                        ),
                        "",
                    ),
                )
            )
            return
        with self._lock:
            named: list[Any] = []
            with self._noting(named):
                shipped = self._functions.for_job(chunk.job_id, chunk.fn, self._place)
            if named:  # (pickled once per job: noted the first time)
                self._job_shared[chunk.job_id] = named
                while len(self._job_shared) > KEEP:
                    self._job_shared.popitem(last=False)
            self._start(chunk, shipped)

    @contextlib.contextmanager
    def _noting(self, into: list[Any]) -> Iterator[None]:
        """Notes in ``into`` the scattered futures the pickles made meanwhile name."""
        self._naming = into
        try:
            yield
        finally:
            self._naming = None

    def _place(self, handle: Shared[Any]) -> tuple[Any, tuple[Any, ...]]:
        # A shoal.shared object is scattered to every worker once per pool (a blocking
        # round trip, once); tasks carry its key, never a path into this machine.
        future = self._scattered.get(handle)
        if future is None:
            future = self._scatter(handle.value)
            self._scattered[handle] = future
            self._sources[future.key] = weakref.ref(handle)
            self._holding[future.key] = future
            # Released with the handle, as the scattered data was before it was named.
            weakref.finalize(handle, _forget, self._sources, self._holding, future.key)
        if self._naming is not None:
            self._naming.append(future)
        return (shared_from_cluster, (future.key,))

    def _packed(self, items: list[Any]) -> list[Any] | bytes:
        # Dask pickles arguments where it chooses (often another thread): items that
        # carry a shoal.shared handle are pickled here, inside `placing`. A dry run finds
        # them (large buffers stay out of band, uncopied).
        from shoal._wire.pickling import _check, dumps_detached

        found: list[Shared[Any]] = []

        def note(handle: Shared[Any]) -> tuple[Any, tuple[Any, ...]]:
            found.append(handle)
            return (int, ())

        with placing(note):
            _check(items)
        if not found:
            return items
        with placing(self._place):
            return dumps_detached(items)

    def _shared_for(self, chunk: Chunk) -> dict[str, Any]:
        """The scattered futures ``chunk``'s task needs, by key (its items' were noted as
        they were packed)."""
        named = [*self._init_shared, *self._job_shared.get(chunk.job_id, ())]
        return {future.key: self._holding.get(future.key, future) for future in named}

    def _scatter(self, value: Any, *, broadcast: bool = True) -> Any:
        """``value`` scattered (to every worker, with ``broadcast``) within _SCATTER_TIMEOUT s,
        the whole call (``Client.scatter``'s timeout bounds its wait for workers only)."""
        scatter = functools.partial(self._client._scatter, broadcast=broadcast, hash=False)
        return self._client.sync(scatter, value, callback_timeout=_SCATTER_TIMEOUT)

    def _scatter_again(self, names: Iterator[str], *, lost: bool) -> None:
        """Scatters anew the shared objects of ``names`` whose data the cluster lost
        (with ``lost``: every one, its loss already seen by a task)."""
        for name in names:
            future = self._holding.get(name)
            source = self._sources.get(name)
            handle = source() if source is not None else None
            if future is None or handle is None or (not lost and future.status == "finished"):
                continue
            try:
                # To one worker: a broadcast waits on every worker, the dying ones too.
                new = self._scatter(handle.value, broadcast=False)
            except Exception:
                continue  # (workers still dying: the chunk sent again meets it next time)
            self._holding[name] = new
            self._scattered[handle] = new

    def _start(self, chunk: Chunk, shipped: Shipped) -> None:
        import dask

        key = f"shoal-chunk-{self._key}-{next(self._keys)}"
        named: list[Any] = []
        with self._noting(named):
            packed = self._packed(list(chunk.items))
        shared = {**self._shared_for(chunk), **{f.key: self._holding.get(f.key, f) for f in named}}
        if any(future.status != "finished" for future in shared.values()):
            self._scatter_again(iter(list(shared)), lost=False)
            shared = {name: self._holding.get(name, f) for name, f in shared.items()}
        # A chunk's arguments travel inside its task, large arrays included, by design:
        # Dask's advice to scatter them first does not apply to one task per chunk.
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "1TiB"}):
            future = self._client.submit(
                run_with_shared,
                shared,
                self._key,
                self._init,
                shipped[0],
                shipped[1],
                chunk.chunk_id,
                packed,
                chunk.call.code,
                key=key,
                pure=False,
            )
        self._running[key] = (chunk, shipped, future, list(shared))
        future.add_done_callback(self._done.put)

    def _deliver(self) -> None:
        while (first := self._done.get()) is not None:
            # Every chunk finished by now, its values fetched from the workers together:
            # one round trip for many, where one each would bound the pool's rate.
            batch, end = [first], False
            with contextlib.suppress(queue.Empty):
                while (more := self._done.get_nowait()) is not None:
                    batch.append(more)
                else:
                    end = True
            finished = [f for f in batch if f.status == "finished"]
            try:
                values = dict(zip(finished, self._client.gather(finished), strict=True))
            except Exception:
                values = {}  # each is read on its own below, which says what went wrong
            for future in batch:
                self._answer(future, values)
            del first, batch, finished, values
            with self._lock:
                if end or (self._stopping and not self._running):
                    return

    def _answer(self, future: Any, values: dict[Any, Any]) -> None:
        with self._lock:
            entry = self._running.pop(future.key, None)
        if entry is None or self._cancelled:
            return
        chunk, shipped, _, names = entry
        try:
            result = from_wire(values[future] if future in values else future.result())
        except CancelledError as exc:
            if self._cancelled:
                return
            # Not ours: Dask cancels a task whose dependencies were lost, a shoal.shared
            # object among them when every worker holding it died. It never ran: sent
            # again with the object scattered anew, a few times.
            tries = self._reshipped.get(chunk.chunk_id, 0)
            if names and tries < _RESHIP_LIMIT:
                self._reshipped[chunk.chunk_id] = tries + 1
                with self._lock:
                    self._scatter_again(iter(names), lost=True)
                    if self._send_again(chunk, shipped):
                        return
            lost = WorkerLostError(
                None, None, None, f"the Dask workers holding what it needed died ({exc})"
            )
            result = all_failed(chunk.chunk_id, len(chunk.items), Failure(lost, ""))
        except self._killed_worker as exc:
            if chunk.retries > 0:
                chunk.retries -= 1
                with self._lock:
                    if self._send_again(chunk, shipped):
                        return
            lost = WorkerLostError(None, None, None, f"the Dask worker running it died ({exc})")
            result = all_failed(chunk.chunk_id, len(chunk.items), Failure(lost, ""))
        except Exception as exc:
            if self._cancelled:
                return
            result = all_failed(chunk.chunk_id, len(chunk.items), Failure.capture(exc))
        self._reshipped.pop(chunk.chunk_id, None)
        self._sink(result)

    def _send_again(self, chunk: Chunk, shipped: Shipped) -> bool:
        """Sends ``chunk`` to the cluster once more (with the lock held); False if the
        client could not (the chunk then fails with the error it had)."""
        try:
            self._start(chunk, shipped)
        except Exception:
            return False
        return True

    def shutdown(self, *, cancel: bool) -> None:
        """Takes no more work; with ``cancel``, cancels what the cluster has not finished."""
        with self._lock:
            self._stopping = True
            if cancel and not self._cancelled:
                self._cancelled = True
                futures = [entry[2] for entry in self._running.values()]
                self._running.clear()
                with contextlib.suppress(Exception):
                    self._client.cancel(futures)
            if not self._running:
                self._done.put(None)  # nothing more will come: the result thread ends

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the result thread, then closes an embedded cluster."""
        if threading.current_thread() is self._results:
            return False
        self._results.join(timeout)
        if self._results.is_alive():
            return False
        if self._cluster is not None:
            self._cluster.close()
        elif self._owns_client:
            with contextlib.suppress(Exception):
                self._client.close()
        return True
