"""``shoal.Pool``: ``multiprocessing.Pool``'s API over a pluggable backend, plus ``submit``.
The calls live in :mod:`shoal.pool._single` and :mod:`shoal.pool._maps`; this module
holds the constructor, what the pool tells about itself, and its lifecycle."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal

from shoal import backends
from shoal.backends.base import WorkerHandle, WorkerSpec
from shoal.pool._arguments import check_timeout
from shoal.pool._chunks import check_chunksize
from shoal.pool._core import CLOSE, RUN, PoolCore
from shoal.pool._maps import MapCalls
from shoal.pool._results import remote_exception
from shoal.pool._single import SingleCalls
from shoal.pool._stats import PoolStats

__all__ = ["Pool"]


class Pool(SingleCalls, MapCalls):
    """A pool of workers with ``multiprocessing.Pool``'s API, for any callable.

    Args:
        processes: the number of workers; ``None`` means :func:`shoal.cpu_count` (on a
            cluster backend: the cluster's total threads).
        initializer: if given, each worker calls ``initializer(*initargs)`` when it starts.
        initargs: the initializer's arguments.
        maxtasksperchild: a worker exits after this many tasks (chunks, as in
            multiprocessing) and a fresh one replaces it; ``None``: workers live as long as
            the pool.
        context: a multiprocessing context, as multiprocessing's fifth argument: the
            process backend starts its workers by its method (``fork`` forks them; ``spawn``
            and ``forkserver`` use shoal's zygote) and names them after it
            (``SpawnPoolWorker-N``). Other backends take none.
        backend: what runs the tasks, by name (``shoal.backends.available()``):
            ``"process"`` (the default, ``shoal.backends.DEFAULT_BACKEND``) runs them in
            worker processes; ``"thread"`` on threads of this process, nothing pickled;
            ``"dask"`` and ``"ray"`` as tasks on those engines' clusters (a local one the
            pool starts, or one it is given: ``address=``). Any other name raises
            ``ValueError``.
        chunksize: the chunk size for calls that do not give one; ``None``: ``map`` uses
            multiprocessing's formula (over the backend's worker count) and ``imap``
            adapts to measured task times.
        task_timeout: seconds any one task may run (process backend): past it, its worker
            is killed and replaced and the task fails with :class:`shoal.TaskTimeoutError`;
            other tasks are untouched. Each call may set its own (``math.inf``: none for
            that call, whatever the pool's). A call with a limit runs one task per chunk.
            ``None`` or ``math.inf``: no limit.
        retries: how many times a task runs again when its worker dies under it (killed,
            crashed, out of memory) before it fails with :class:`shoal.WorkerLostError`.
        worker_exit: if given, each worker calls ``worker_exit()`` as it leaves: when the
            pool closes, and when ``maxtasksperchild`` retires it (not when it is killed:
            ``terminate()`` kills process workers; threads still run it). It runs with
            :func:`shoal.current_worker` still set, so it can report the worker's
            ``state``; what it returns is collected by :meth:`exit_results`. Process and
            thread backends (the cluster backends refuse it: their workers are the
            cluster's).
        backend_options: the backend's own keyword arguments; one it does not take is a
            ``TypeError``. The process backend takes ``start_method`` (``"zygote"``, the
            default: forked from a fresh interpreter shoal keeps for the purpose, fast and
            safe in a program with threads; ``"spawn"``, a new interpreter each;
            ``"fork"``, a copy of this process, as multiprocessing's fork),
            ``arena_bytes`` (the shared memory large buffers may hold), ``prefetch``
            (chunks a worker holds at once; ``1``: none waits behind a slow one) and
            ``max_memory_per_child`` (bytes of resident memory past which a worker is
            replaced after its chunk); ``shoal.backends._process_options`` says
            more.

    Example:
        >>> import shoal
        >>> with shoal.Pool(2, backend="thread") as pool:
        ...     pool.map(abs, [-1, -2, 3])
        [1, 2, 3]
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        backend: str | None = None,
        chunksize: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        worker_exit: Callable[[], object] | None = None,
        _role: Literal["pool", "executor"] = "pool",
        **backend_options: Any,
    ) -> None:
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
            isinstance(maxtasksperchild, bool)
            or not isinstance(maxtasksperchild, int)
            or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if worker_exit is not None and not callable(worker_exit):
            raise TypeError(f"worker_exit must be a callable, not {type(worker_exit).__name__}")
        check_chunksize(chunksize)
        task_timeout = check_timeout(task_timeout)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative int, not {retries!r}")
        name = backends.DEFAULT_BACKEND if backend is None else backend
        factory = backends.get_factory(name)
        if context is not None:
            backend_options["context"] = context
        spec = WorkerSpec(
            processes, initializer, tuple(initargs), maxtasksperchild, worker_exit, _role
        )
        self._backend_name = name
        self._chunksize = chunksize
        self._task_timeout = task_timeout
        self._retries = retries
        self._state_set: str | None = None
        self._core = PoolCore(factory, spec, backend_options)
        # Shuts an abandoned pool down without waiting, at collection or interpreter exit,
        # so neither ever blocks on a task still running.
        self._finalizer = weakref.finalize(self, self._core.terminate, False)

    def __del__(self) -> None:
        # As multiprocessing warns: an abandoned pool's workers are killed by the
        # finalizer, whatever they were doing.
        if getattr(self, "_core", None) is not None and self._state == RUN:
            warnings.warn(
                f"unclosed running multiprocessing pool {self!r}: its workers are being "
                "killed; close() and join() it, or make it in a with block",
                ResourceWarning,
                stacklevel=1,  # from __del__: no caller frame to point at
                source=self,
            )

    @property
    def _state(self) -> str:
        """multiprocessing's name for the pool's state: ``"RUN"``, ``"CLOSE"`` or
        ``"TERMINATE"``. Code may set it, as multiprocessing's own tests do to make a
        finished pool warn as a running one; what it set is only what ``__del__`` and
        this attribute read, never what the pool does."""
        return self._state_set or self._core.state

    @_state.setter
    def _state(self, state: str) -> None:
        self._state_set = state

    @property
    def _processes(self) -> int:
        # multiprocessing.Pool's attribute of that name, which programs read for the size.
        return self._core.workers

    def __repr__(self) -> str:
        state = self._core.state
        return (
            f"<shoal.Pool state={state} backend={self._backend_name} "
            f"processes={self._core.workers}>"
        )

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled; "
            "create the pool where it is used"
        )

    @property
    def _pool(self) -> list[WorkerHandle]:
        """The workers running now, as ``multiprocessing.Pool._pool`` lists its
        processes: each with ``name``, ``pid``, ``exitcode`` and ``is_alive()`` (code that
        reads worker pids from there works unchanged).

        >>> import shoal
        >>> with shoal.Pool(2) as pool:
        ...     [w.is_alive() for w in pool._pool]
        [True, True]
        """
        return self._core.backend.handles()

    @property
    def _cache(self) -> dict[int, Any]:
        """The calls not finished yet, as ``multiprocessing.Pool._cache`` holds them: their
        result objects (``AsyncResult``, ``MapResult``, ``imap``'s iterator, ``submit``'s
        future), each under a number of its own. A fresh dict at each read, so programs
        that wait ``while pool._cache:`` or count ``len(pool._cache)`` see it empty once
        every call has its answer.

        >>> import shoal, time
        >>> with shoal.Pool(1, backend="thread") as pool:
        ...     result = pool.apply_async(time.sleep, (0.5,))
        ...     [type(r).__name__ for r in pool._cache.values()], result.get(5), pool._cache
        (['AsyncResult'], None, {})
        """
        return self._core.unfinished()

    def _repopulate_pool(self) -> None:
        """multiprocessing's way to replace exited workers; a shoal Pool replaces each
        as it exits, so there is nothing to do."""

    def stats(self) -> PoolStats:
        """What the pool has done and how its workers spend their time: tasks, chunks,
        failures and tasks per second; per worker index, tasks and chunks done, busy and
        idle seconds, start-up time and restarts by reason; the slowest chunks with their
        first task's arguments; the arena (process backend). ``print()`` the result for a
        table. Counting costs a few additions per chunk; ``SHOAL_STATS=0`` in the
        environment when the pool is made leaves it out.

        >>> import shoal
        >>> with shoal.Pool(2) as pool:
        ...     _ = pool.map(abs, range(-50, 50), chunksize=10)
        ...     stats = pool.stats()
        >>> stats.tasks_done, stats.chunks_done, sum(w.tasks for w in stats.workers)
        (100, 10, 100)
        >>> [w.index for w in stats.workers], sorted(stats.arena)[:2]
        ([0, 1], ['allocations', 'blocks'])
        """
        return self._core.stats(self._backend_name)

    def exit_results(self) -> list[Any]:
        """What ``worker_exit`` returned in each worker that has left so far, in the order
        they left: after ``close()`` and ``join()``, one value per worker the pool ever
        had (a worker retired by ``maxtasksperchild`` included), but for killed ones.

        Raises:
            Exception: the first error ``worker_exit`` raised in a worker, with that
                worker's traceback as its ``__cause__`` (as a task's error).

        >>> import shoal
        >>> def count(x):
        ...     state = shoal.current_worker().state
        ...     state["done"] = state.get("done", 0) + 1
        >>> def report():
        ...     return shoal.current_worker().state.get("done", 0)
        >>> pool = shoal.Pool(2, worker_exit=report)
        >>> _ = pool.map(count, range(10), chunksize=1)
        >>> pool.close(); pool.join()
        >>> sum(pool.exit_results()), len(pool.exit_results())
        (10, 2)
        """
        exits = self._core.backend.exit_results()
        for left in exits:
            if left.failure is not None:
                raise remote_exception(left.failure)
        return [left.value for left in exits]

    def close(self) -> None:
        """Accepts no more work; the workers exit once the work already given is done.

        >>> import shoal
        >>> pool = shoal.Pool(2)
        >>> result = pool.map_async(abs, [-1, -2])
        >>> pool.close(); pool.join()
        >>> result.get(timeout=0)
        [1, 2]
        """
        self._core.close()

    def terminate(self) -> None:
        """Stops at once: queued tasks are dropped and pending results raise
        ``concurrent.futures.CancelledError``. Worker processes are killed and this waits
        until they are gone; thread tasks already running cannot be cut short, and this
        does not wait for them (``join`` does). Leaving a ``with`` block calls it.

        >>> import shoal
        >>> pool = shoal.Pool(1)
        >>> pool.terminate(); pool.join()
        >>> pool.apply(abs, (-1,))
        Traceback (most recent call last):
        ...
        ValueError: Pool not running
        """
        self._finalizer.detach()
        self._core.terminate(wait=True)

    def join(self) -> None:
        """Waits for the workers to exit; call :meth:`close` or :meth:`terminate` first
        (``ValueError`` otherwise, as in multiprocessing). Work handed out before ``close``
        completes first, including ``imap`` results nobody has read yet.

        >>> import shoal
        >>> pool = shoal.Pool(1)
        >>> pool.join()
        Traceback (most recent call last):
        ...
        ValueError: Pool is still running
        >>> pool.close(); pool.join()
        """
        if self._core.state == RUN:
            raise ValueError("Pool is still running")
        self._core.join()
        if self._core.state == CLOSE:
            self._finalizer.detach()

    def __enter__(self) -> Pool:
        if self._core.state != RUN:
            raise ValueError("Pool not running")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()
