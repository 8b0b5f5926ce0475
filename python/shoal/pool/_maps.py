"""The map family of :class:`shoal.Pool`: ``map``, ``starmap``, ``imap`` and their async
forms, and how each call becomes a job for the pool's core."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from shoal.backends.base import CallKind
from shoal.pool._arguments import check_buffersize, check_callable, check_timeout, length_of
from shoal.pool._chunks import ChunkSizer, check_chunksize, map_chunksize
from shoal.pool._core import RUN, PoolCore
from shoal.pool._imap import IMapIterator
from shoal.pool._jobs import READ_AHEAD, SINGLE, Job, Target, WeakTarget
from shoal.pool._progress import PROGRESS_STEPS, ProgressCounter, ProgressSpec, counter_for
from shoal.pool._results import AsyncResult, MapResult, get_or_abandon

__all__ = ["MapCalls"]

T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


class MapCalls:
    """The maps of :class:`shoal.Pool`, which inherits them (its constructor sets the
    attributes below): each cuts its input into chunks and hands them to the core.

    Example:
        >>> import shoal
        >>> issubclass(shoal.Pool, MapCalls)
        True
    """

    _core: PoolCore
    _chunksize: int | None
    _task_timeout: float | None
    _retries: int

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
        return get_or_abandon(
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
        return get_or_abandon(
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
        buffersize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: ProgressSpec = None,
    ) -> IMapIterator[R]:
        """A lazy, ordered ``map``: results stream as soon as they (and those before them)
        exist. The input is read only a bounded distance ahead of the consumer, so an
        infinite generator works; ``buffersize`` (Python 3.16's) bounds it to that many
        items ahead. Without ``chunksize``, chunks adapt to task times.

        >>> import itertools, shoal
        >>> with shoal.Pool(2) as pool:
        ...     list(itertools.islice(pool.imap(abs, itertools.count(-3)), 5))
        [3, 2, 1, 0, 1]
        """
        check_buffersize(buffersize)
        return self._imap(
            func, iterable, chunksize, True, task_timeout, read_ahead=buffersize, progress=progress
        )

    def imap_unordered(
        self,
        func: Callable[[T], R],
        iterable: Iterable[T],
        chunksize: int | None = None,
        buffersize: int | None = None,
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
        check_buffersize(buffersize)
        return self._imap(
            func, iterable, chunksize, False, task_timeout, read_ahead=buffersize, progress=progress
        )

    # -- lifecycle ---------------------------------------------------------------------
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
        check_callable(fn)
        # (A call's own limit, math.inf for none, or else the pool's.)
        timeout = self._task_timeout if task_timeout is None else check_timeout(task_timeout)
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
        counter = counter_for(progress, length_of(iterable))
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
        result._stop_reading = lambda ahead: core.stop_reading(job, ahead)
        result._read_all = lambda: core.read_all(job)
        return result
