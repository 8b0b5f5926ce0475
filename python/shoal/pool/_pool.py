"""``shoal.Pool``: ``multiprocessing.Pool``'s API over a pluggable backend, plus ``submit``."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from shoal import backends
from shoal._progress import PROGRESS_STEPS, ProgressCounter, ProgressSpec, counter_for
from shoal.backends.base import CallKind, WorkerHandle, WorkerSpec
from shoal.pool._chunks import ChunkSizer, check_chunksize, map_chunksize
from shoal.pool._core import (
    CLOSE,
    READ_AHEAD,
    RUN,
    SINGLE,
    Job,
    PoolCore,
    Target,
    WeakTarget,
)
from shoal.pool._futures import FutureTarget, PoolFuture
from shoal.pool._imap import IMapIterator
from shoal.pool._results import AsyncResult, MapResult, remote_exception
from shoal.pool._stats import PoolStats

__all__ = ["Pool"]

T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
P = ParamSpec("P")

_EMPTY_KWDS: Mapping[str, Any] = {}


class Pool:
    """A pool of workers with ``multiprocessing.Pool``'s API, for any callable.

    Args:
        processes: the number of workers; ``None`` means :func:`shoal.cpu_count` (on a
            cluster backend: the cluster's total threads).
        initializer: if given, each worker calls ``initializer(*initargs)`` when it starts.
        initargs: the initializer's arguments.
        maxtasksperchild: a worker exits after this many tasks (chunks, as in
            multiprocessing) and a fresh one replaces it; ``None``: workers live as long as
            the pool.
        backend: what runs the tasks, by name (``shoal.backends.available()``):
            ``"process"`` (the default, ``shoal.backends.DEFAULT_BACKEND``) runs them in
            worker processes; ``"thread"`` on threads of this process, nothing pickled.
            Any other name raises ``ValueError``.
        chunksize: the chunk size for calls that do not give one; ``None``: ``map`` uses
            multiprocessing's formula (over the backend's worker count) and ``imap``
            adapts to measured task times.
        task_timeout: seconds any one task may run (process backend): past it, its worker
            is killed and replaced and the task fails with :class:`shoal.TaskTimeoutError`;
            other tasks are untouched. Each call may set its own. A call with a limit runs
            one task per chunk. ``None``: no limit.
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
            ``"fork"``, a copy of this process, as multiprocessing's fork) and
            ``arena_bytes`` (the shared memory large buffers may hold) and ``prefetch``
            (chunks a worker holds at once; ``1``: none waits behind a slow one;
            :class:`shoal.backends.process.ProcessBackend` says more).

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
        *,
        backend: str | None = None,
        chunksize: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        worker_exit: Callable[[], object] | None = None,
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
        _check_timeout(task_timeout)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative int, not {retries!r}")
        name = backends.DEFAULT_BACKEND if backend is None else backend
        factory = backends.get_factory(name)
        spec = WorkerSpec(processes, initializer, tuple(initargs), maxtasksperchild, worker_exit)
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

    # -- single calls ----------------------------------------------------------------

    def apply(
        self,
        func: Callable[..., R],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = _EMPTY_KWDS,
        *,
        task_timeout: float | None = None,
    ) -> R:
        """Calls ``func(*args, **kwds)`` on a worker and returns its result.
        ``task_timeout`` overrides the pool's for this call.

        >>> import shoal
        >>> with shoal.Pool(1) as pool:
        ...     pool.apply(pow, (2, 10))
        1024
        """
        return _wait(self.apply_async(func, args, kwds, task_timeout=task_timeout))

    def apply_async(
        self,
        func: Callable[..., R],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = _EMPTY_KWDS,
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
    ) -> AsyncResult[R]:
        """Like :meth:`apply` but returns an :class:`AsyncResult` at once. ``callback``
        gets the value, or ``error_callback`` the exception, on the pool's result thread
        before the result becomes ready; they should return quickly.

        >>> import shoal
        >>> with shoal.Pool(1) as pool:
        ...     pool.apply_async(max, (3, 9)).get(timeout=10)
        9
        """
        _check_callable(func)
        if task_timeout is None:
            timeout = self._task_timeout
        else:
            _check_timeout(task_timeout)
            timeout = task_timeout
        result: AsyncResult[R] = AsyncResult(self, callback, error_callback)
        call, item = _single_call(tuple(args), kwds)
        self._core.add_single(func, call, item, result, timeout, self._retries)
        return result

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> PoolFuture[R]:
        """Schedules ``fn(*args, **kwargs)`` and returns a ``concurrent.futures.Future``;
        cancelling the future before a worker takes the task skips it.

        >>> import shoal
        >>> with shoal.Pool(1) as pool:
        ...     pool.submit(sorted, [3, 1, 2], reverse=True).result(timeout=10)
        [3, 2, 1]
        """
        return self._submit(PoolFuture(self._core), fn, args, kwargs)

    def _submit(
        self,
        future: PoolFuture[R],
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> PoolFuture[R]:
        """``submit``'s work, feeding the given future (``shoal.Executor`` gives one of
        its own)."""
        _check_callable(fn)
        call, item = _single_call(args, kwargs)
        target = FutureTarget(future)
        self._core.add_single(fn, call, item, target, self._task_timeout, self._retries)
        return future

    # -- maps --------------------------------------------------------------------------

    def map(
        self,
        func: Callable[[T], R],
        iterable: Iterable[T],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> list[R]:
        """``[func(x) for x in iterable]`` across the workers, in order. The first task to
        raise makes ``map`` raise it (the rest of the input is not started).
        ``task_timeout`` overrides the pool's for this call. ``progress`` counts finished
        tasks: ``True`` draws a tqdm bar; a tqdm bar, a ``rich.progress.Progress`` or a
        callable of ``(done, total)`` is given the counts (every map and imap takes it).

        >>> import shoal
        >>> with shoal.Pool(2) as pool:
        ...     pool.map(len, ["a", "bb", "ccc"])
        [1, 2, 3]
        """
        return _wait(
            self.map_async(func, iterable, chunksize, task_timeout=task_timeout, progress=progress)
        )

    def map_async(
        self,
        func: Callable[[T], R],
        iterable: Iterable[T],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> AsyncResult[list[R]]:
        """Like :meth:`map` but returns an :class:`AsyncResult` for the list at once;
        ``callback`` gets the whole list, ``error_callback`` the first exception.

        >>> import shoal
        >>> with shoal.Pool(2) as pool:
        ...     pool.map_async(abs, [-1, -2]).get(timeout=10)
        [1, 2]
        """
        return self._map(
            func,
            CallKind.ONE,
            iterable,
            chunksize,
            callback,
            error_callback,
            task_timeout,
            progress,
        )

    @overload
    def starmap(
        self,
        func: Callable[[A], R],
        iterable: Iterable[tuple[A]],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> list[R]: ...
    @overload
    def starmap(
        self,
        func: Callable[[A, B], R],
        iterable: Iterable[tuple[A, B]],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> list[R]: ...
    @overload
    def starmap(
        self,
        func: Callable[[A, B, C], R],
        iterable: Iterable[tuple[A, B, C]],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> list[R]: ...
    @overload
    def starmap(
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> list[R]: ...
    def starmap(
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> list[R]:
        """Like :meth:`map`, but each item is unpacked into arguments: ``func(*item)``.

        >>> import shoal
        >>> with shoal.Pool(2) as pool:
        ...     pool.starmap(pow, [(2, 3), (3, 2)])
        [8, 9]
        """
        return _wait(
            self.starmap_async(
                func, iterable, chunksize, task_timeout=task_timeout, progress=progress
            )
        )

    def starmap_async(
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> AsyncResult[list[R]]:
        """Like :meth:`starmap` but returns an :class:`AsyncResult` for the list at once.

        >>> import shoal
        >>> with shoal.Pool(2) as pool:
        ...     pool.starmap_async(max, [(1, 5), (7, 2)]).get(timeout=10)
        [5, 7]
        """
        return self._map(
            func,
            CallKind.STAR,
            iterable,
            chunksize,
            callback,
            error_callback,
            task_timeout,
            progress,
        )

    def imap(
        self,
        func: Callable[[T], R],
        iterable: Iterable[T],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> IMapIterator[R]:
        """A lazy, ordered ``map``: results stream as soon as they (and those before them)
        exist. The input is read only a bounded distance ahead of the consumer, so an
        infinite generator works. Without ``chunksize``, chunks adapt to task times.

        >>> import itertools, shoal
        >>> with shoal.Pool(2) as pool:
        ...     list(itertools.islice(pool.imap(abs, itertools.count(-3)), 5))
        [3, 2, 1, 0, 1]
        """
        return self._imap(func, iterable, chunksize, True, task_timeout, progress=progress)

    def imap_unordered(
        self,
        func: Callable[[T], R],
        iterable: Iterable[T],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> IMapIterator[R]:
        """Like :meth:`imap`, but results come in the order they finish.

        >>> import shoal
        >>> with shoal.Pool(2) as pool:
        ...     sorted(pool.imap_unordered(abs, [-1, -2, -3]))
        [1, 2, 3]
        """
        return self._imap(func, iterable, chunksize, False, task_timeout, progress=progress)

    # -- lifecycle ---------------------------------------------------------------------

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

    # -- internals ---------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._core.state != RUN:
            raise ValueError("Pool not running")

    def _add(
        self,
        fn: Callable[..., Any],
        call: CallKind,
        source: Any,
        chunksize: int | None,
        target: Target,
        window: int | None,
        task_timeout: float | None = None,
        limit: int | None = None,
        progress: ProgressCounter | None = None,
    ) -> Job:
        _check_callable(fn)
        _check_timeout(task_timeout)
        timeout = self._task_timeout if task_timeout is None else task_timeout
        # A call with a time limit runs one task per chunk, so the limit is each task's.
        sizer = SINGLE if timeout is not None else ChunkSizer(chunksize)
        job = Job(fn, call, source, sizer, target, window, timeout, self._retries, limit, progress)
        self._core.add(job)
        return job

    def _map(
        self,
        func: Callable[..., R],
        call: CallKind,
        iterable: Iterable[Any],
        chunksize: int | None,
        callback: Callable[[list[R]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> AsyncResult[list[R]]:
        self._check_running()
        check_chunksize(chunksize)
        # As multiprocessing does: the input is read here, so its errors raise here and
        # its length gives the chunk size.
        items = iterable if isinstance(iterable, list | tuple | range) else list(iterable)
        if chunksize is None:
            chunksize = self._chunksize or map_chunksize(len(items), self._core.workers)
            if progress is not None and progress is not False:
                # A bar moves as chunks finish: in steps of at most 1% of the map.
                chunksize = min(chunksize, -(-len(items) // PROGRESS_STEPS))
        result: MapResult[R] = MapResult(self, len(items), callback, error_callback)
        counter = counter_for(progress, len(items))
        if counter is not None:
            result._progress = counter
            if result.ready():  # an empty input
                counter.close()
        if items:
            self._add(func, call, items, chunksize, result, None, task_timeout, None, counter)
        return result

    def _imap(
        self,
        func: Callable[[T], R],
        iterable: Iterable[T],
        chunksize: int | None,
        ordered: bool,
        task_timeout: float | None = None,
        *,
        call: CallKind = CallKind.ONE,
        read_ahead: int | None = None,
        progress: ProgressSpec = None,
    ) -> IMapIterator[R]:
        """``imap``'s work; ``call`` says how items are passed (``CallKind.STAR`` for
        ``Executor.map``'s argument tuples) and ``read_ahead`` bounds, in items, how far
        the input is read ahead of the consumer (``Executor.map``'s ``buffersize``)."""
        self._check_running()
        check_chunksize(chunksize)
        result: IMapIterator[R] = IMapIterator(self, ordered)
        counter = counter_for(progress, _length_of(iterable))
        if counter is not None:
            result._count_progress(counter)
        # A list, tuple or range is sliced (each chunk in one step); anything else is read
        # item by item, as late as the read-ahead bound allows.
        source = iterable if isinstance(iterable, list | tuple | range) else iter(iterable)
        job = self._add(
            func,
            call,
            source,
            chunksize or self._chunksize,
            WeakTarget(result),
            READ_AHEAD * self._core.workers,
            task_timeout,
            read_ahead,
            counter,
        )
        core = self._core
        result._on_consumed = lambda count: core.consumed(job, count)
        result._stop_reading = lambda: core.stop_reading(job)
        return result


def _length_of(iterable: Iterable[Any]) -> int | None:
    """The input's length if it has one (``len()``), without reading it."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _single_call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[CallKind, Any]:
    """How one call travels: as ``fn(*args)`` when it has no keywords (nothing to pickle
    for them), else as ``fn(*args, **kwargs)``."""
    if kwargs:
        return CallKind.APPLY, (args, dict(kwargs))
    return CallKind.STAR, args


def _check_callable(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__!r} object is not callable")


def _check_timeout(seconds: float | None) -> None:
    if seconds is None:
        return
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(f"task_timeout must be a positive number of seconds, not {seconds!r}")


def _wait(result: AsyncResult[R]) -> R:
    """``result.get()`` for the blocking calls: if the wait is interrupted (Ctrl-C), the
    call's tasks not yet handed to a worker are dropped instead of running for nobody."""
    try:
        return result.get()
    except BaseException:
        result._abandon()
        raise
