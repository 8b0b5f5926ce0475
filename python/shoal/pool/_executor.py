"""``shoal.Executor``: a ``concurrent.futures.Executor`` on a shoal Pool (the drop-in names
``ProcessPoolExecutor`` and ``ThreadPoolExecutor`` on it are in ``_drop_in_executors``).

It is a thin front on :class:`shoal.Pool`: ``submit`` is the Pool's (a future whose
``cancel`` takes back a task no worker has started), ``map`` is the Pool's lazy ``imap``
over argument tuples (adaptive chunks unless ``chunksize`` is given, input read only
``buffersize`` items ahead when asked). What it adds is the executor's contract:

* a failing initializer *breaks* the executor, as in ``concurrent.futures``: the worker
  answers every task with :class:`shoal.InitializerError` (a ``BrokenExecutor``), the
  first such answer marks the executor broken, fails every pending future with it, is
  logged on the ``concurrent.futures`` logger, and ``submit`` refuses from then on;
* a worker's death fails only that task's future (:class:`shoal.WorkerLostError`);
* work submitted before ``shutdown(wait=False)``, or never shut down, still finishes
  before the interpreter exits, as the standard executors promise.

Example:
    >>> import shoal
    >>> with shoal.Executor(2) as ex:
    ...     ex.submit(pow, 2, 10).result(), list(ex.map(divmod, [7, 9], [2, 4]))
    (1024, [(3, 1), (2, 1)])
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import TimeoutError as MpTimeoutError
from typing import Any, ParamSpec, TypeVar

from shoal.backends.base import CallKind
from shoal.errors import InitializerError
from shoal.pool import Pool
from shoal.pool._arguments import check_buffersize
from shoal.pool._chunks import check_chunksize
from shoal.pool._futures import PoolFuture
from shoal.pool._progress import ProgressSpec, counter_for
from shoal.pool._results import Withdrawer

__all__ = ["Executor"]

P = ParamSpec("P")
R = TypeVar("R")

_LOGGER = logging.getLogger("concurrent.futures")

# Every executor not shut down and waited for: their work finishes before the
# interpreter exits.
_OPEN: weakref.WeakSet[Executor] = weakref.WeakSet()
# Executors with unfinished futures, held so that a program that drops its executor
# still gets its results (the standard executors' threads hold theirs the same way).
_BUSY: set[Executor] = set()
_EXITING = False


class _GuardedInitializer:
    """Runs the user's initializer in the worker; its error comes back from every task
    of that worker as an :class:`InitializerError` naming it, which is how the parent
    learns that the executor is broken (whatever the backend)."""

    def __init__(self, initializer: Callable[..., object]) -> None:
        self.initializer = initializer

    def __call__(self, *initargs: Any) -> None:
        try:
            self.initializer(*initargs)
        except Exception as exc:
            name = getattr(self.initializer, "__qualname__", repr(self.initializer))
            raise InitializerError(name, f"{type(exc).__name__}: {exc}") from exc


class _ExecutorFuture(PoolFuture[R]):
    """A Pool future that breaks its executor *before* it fails with the initializer's
    error, so whoever sees that error finds the executor broken (and ``submit``
    refusing)."""

    def __init__(self, pool: Withdrawer, on_broken: Callable[[InitializerError], None]) -> None:
        super().__init__(pool)
        self._on_broken = on_broken

    def set_exception(self, exception: BaseException | None) -> None:
        if isinstance(exception, InitializerError):
            self._on_broken(exception)
        super().set_exception(exception)


class Executor(futures.Executor):
    """A ``concurrent.futures.Executor`` that runs any callable on shoal's workers.

    Args:
        max_workers: how many workers; ``None``: the backend's default (the CPU count).
        backend: where work runs: ``"process"`` (the default), ``"thread"``, ``"dask"``,
            ``"ray"``, as for :class:`shoal.Pool`.
        initializer: called as ``initializer(*initargs)`` in each new worker; if it
            raises, the executor is broken (:class:`shoal.InitializerError`).
        initargs: the initializer's arguments.
        max_tasks_per_child: a worker is replaced after this many tasks.
        task_timeout: seconds a task may run before its worker is killed and replaced
            and its future fails with :class:`shoal.TaskTimeoutError`.
        retries: how many times a task whose worker died runs again.
        backend_options: the backend's own options (``start_method``, ``address``...).

    A worker that dies fails only its task's future (:class:`shoal.WorkerLostError`);
    the executor goes on with a replacement.

    Example:
        >>> import shoal
        >>> with shoal.Executor(2, backend="thread") as ex:
        ...     [f.result() for f in [ex.submit(len, "abc"), ex.submit(sum, [1, 2])]]
        [3, 3]
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        backend: str | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_child: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        **backend_options: Any,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        guarded = None if initializer is None else _GuardedInitializer(initializer)
        self._pool = Pool(
            max_workers,
            guarded,
            tuple(initargs),
            max_tasks_per_child,
            backend=backend,
            task_timeout=task_timeout,
            retries=retries,
            _role="executor",
            **backend_options,
        )
        self._lock = threading.Lock()
        self._shutdown = False
        self._broken: InitializerError | bool = False
        self._breaking = False
        # Unfinished futures (for cancel_futures and for breaking); each leaves as it ends.
        self._pending: set[futures.Future[Any]] = set()
        # The iterators of maps still running, and each one's buffersize: at shutdown,
        # the rest of a map's input is run (or, with a buffersize, not read: see shutdown).
        self._maps: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()
        _OPEN.add(self)
        # An executor dropped with nothing pending lets its workers go, quietly.
        weakref.finalize(self, Pool.close, self._pool)

    @property
    def _max_workers(self) -> int:
        # concurrent.futures' attribute of that name, which programs read for the size.
        return self._pool._processes

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> PoolFuture[R]:
        """Schedules ``fn(*args, **kwargs)`` and returns its future; ``RuntimeError``
        after ``shutdown``, the :class:`shoal.InitializerError` once broken.

        >>> import shoal
        >>> with shoal.Executor(1) as ex:
        ...     ex.submit(lambda x, y=1: x + y, 41).result(timeout=10)
        42
        """
        with self._lock:
            self._check_open()
            future = self._pool._submit(
                _ExecutorFuture(self._pool._core, self._break), fn, args, kwargs
            )
            if not self._pending:
                _BUSY.add(self)
            self._pending.add(future)
        future.add_done_callback(self._settled)
        return future

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        buffersize: int | None = None,
        progress: ProgressSpec = None,
    ) -> Generator[R, None, None]:
        """``map(fn, *iterables)`` across the workers, lazily: the input is read as
        results are taken (at most ``buffersize`` items ahead when given), results come
        in order, and a task's error is raised at its place. ``chunksize=None`` adapts
        chunks to task times (one task per chunk while they are slow). ``timeout``
        counts from this call: ``TimeoutError`` if the next result is not there by then.
        Leaving the loop early stops the rest of the input from being started.
        ``progress`` counts finished tasks, as for :meth:`shoal.Pool.map` (the total is
        known when every iterable has a ``len()``). A ``submit`` replaced on this
        executor (tqdm's ``process_map`` does it to count calls) is honoured: each call
        then goes through it, as with the standard map.

        >>> import itertools, shoal
        >>> with shoal.Executor(2) as ex:
        ...     list(itertools.islice(ex.map(abs, itertools.count(-2)), 4))
        [2, 1, 0, 1]
        """
        check_buffersize(buffersize)
        if chunksize is not None:
            check_chunksize(chunksize)
        if "submit" in vars(self):
            # Someone replaced submit on this executor to see each call (tqdm's
            # process_map and thread_map do, to move their bar): honoured, as the
            # standard map honours it, by submitting each call through it.
            return (value for value in futures.Executor.map(self, fn, *iterables, timeout=timeout))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._check_open()
            results = self._pool._imap(
                fn,
                zip(*iterables, strict=False),
                chunksize,
                True,
                call=CallKind.STAR,
                read_ahead=buffersize,
            )
        counter = counter_for(progress, _shortest(iterables))
        if counter is not None:
            results._count_progress(counter)
        self._maps[results] = buffersize
        return self._yield(results, deadline)

    def _yield(self, results: Any, deadline: float | None) -> Generator[Any, None, None]:
        # A generator of its own, so that its values are not held once yielded and the
        # iterator's errors surface here, where a broken executor can be noticed.
        try:
            while True:
                wait = None if deadline is None else max(deadline - time.monotonic(), 0)
                try:
                    run = results._take_rest(wait)
                except MpTimeoutError:
                    raise TimeoutError("no result within the map's timeout") from None
                except InitializerError as exc:
                    self._break(exc)
                    raise
                if run is None:
                    return
                run.reverse()
                while run:
                    yield run.pop()
        finally:
            results._cancel()  # nothing more is started for a loop that was left

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuses new work; with ``cancel_futures``, cancels every future no worker has
        started; with ``wait``, returns once the work left has finished and the workers
        are gone (without, that happens in the background, and before the interpreter
        exits). Calling it again does nothing more.

        >>> import shoal
        >>> ex = shoal.Executor(1)
        >>> ex.submit(abs, -3).result(timeout=10)
        3
        >>> ex.shutdown()
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._pending) if cancel_futures else []
            unread = list(self._maps.items())
        # concurrent.futures submits every call of a map at once, and shutdown runs them
        # all (or, with cancel_futures, cancels those not started): the rest of a lazy
        # map's input is read and run now, or dropped with cancel_futures. With a
        # buffersize only that many calls ahead of the reader were ever submitted; the
        # rest is not read, as there.
        for results, buffersize in unread:
            if cancel_futures:
                results._stop_reading(0)
            elif buffersize is not None:
                results._stop_reading(buffersize)
            else:
                results._read_all()
        for future in pending:
            future.cancel()
        if self._broken:
            self._pool.terminate()
        else:
            self._pool.close()
        if wait:
            self._pool.join()
            _OPEN.discard(self)

    def terminate_workers(self) -> None:
        """Ends the workers at once (Python 3.14's ``ProcessPoolExecutor`` method, on
        every Python and backend): the executor is shut down, the futures no worker
        started are cancelled, the running ones fail, and it takes no more work. Threads
        cannot be stopped: on the thread backend the running tasks finish.

        >>> import shoal, time
        >>> ex = shoal.ProcessPoolExecutor(1)
        >>> running = ex.submit(time.sleep, 30)
        >>> ex.terminate_workers(); running.exception(timeout=30) is not None
        True
        """
        self.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            running = list(self._pending)
        # As the standard executor's: the tasks a worker had fail with BrokenProcessPool.
        broken = BrokenProcessPool("the executor's workers were ended by terminate_workers()")
        for future in running:
            with contextlib.suppress(futures.InvalidStateError):
                future.set_exception(broken)
        self._pool.terminate()

    def kill_workers(self) -> None:
        """As :meth:`terminate_workers` (shoal ends process workers with ``SIGKILL``
        either way, so nothing a task does can delay it)."""
        self.terminate_workers()

    def _check_open(self) -> None:
        # Called with the lock held.
        if isinstance(self._broken, InitializerError):
            raise self._broken
        if _EXITING:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _settled(self, future: futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)
            if not self._pending:
                _BUSY.discard(self)

    def _break(self, error: InitializerError) -> None:
        """The initializer failed: as a ``concurrent.futures`` executor, this one is
        broken for good; every pending future fails with the error."""
        with self._lock:
            if self._breaking:
                return
            self._breaking = True
        # Logged before the executor shows as broken, so that whoever sees it broken
        # finds the log written.
        _LOGGER.critical("Exception in initializer:", exc_info=error)
        with self._lock:
            self._broken = error
            pending = list(self._pending)
        for future in pending:
            # (Their tasks, if they reach a worker, are answered with the same error.)
            with contextlib.suppress(futures.InvalidStateError):  # it ended meanwhile
                future.set_exception(error)

    def __repr__(self) -> str:
        state = "broken" if self._broken else "shut down" if self._shutdown else "running"
        return f"<shoal.Executor {state} pool={self._pool!r}>"


def _shortest(iterables: tuple[Iterable[Any], ...]) -> int | None:
    """How many calls ``map`` makes, if every input has a length."""
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _finish_at_exit() -> None:
    """At interpreter exit, as the standard executors do: no new work, and the work
    already submitted finishes first."""
    global _EXITING
    _EXITING = True
    for executor in list(_OPEN):
        executor.shutdown(wait=True)


# Registered with threading, as concurrent.futures does: it runs before the interpreter
# stops its threads, so pools still have their result threads while they finish.
threading._register_atexit(_finish_at_exit)  # type: ignore[attr-defined]
