"""joblib on shoal: ``import shoal.joblib`` registers a joblib backend named ``"shoal"``,
so that joblib, and every scikit-learn ``n_jobs=``, runs on shoal's workers::

    import joblib
    import shoal.joblib

    with joblib.parallel_config(backend="shoal", n_jobs=2):
        ...  # joblib.Parallel, GridSearchCV(n_jobs=...), cross_val_score(...)

Options after ``n_jobs`` go to :class:`shoal.Pool`: ``shoal_backend="dask"`` (or
``"ray"``, ``"thread"``; default ``"process"``) chooses where the work runs, and the rest
(``address=``, ``start_method=``, ``task_timeout=``, ``retries=``...) are that Pool's.

What it supports, as joblib's own process backend does: auto-batching, ``return_as=
"generator"`` and ``"generator_unordered"``, ``timeout``, stopping at the first error
(running tasks are killed, on backends that can), and nested calls that do not
oversubscribe (a call inside a worker runs on at most ``CPUs // n_jobs`` threads, and
the workers' BLAS/OpenMP pools are limited the same way, or to
``inner_max_num_threads``). Large NumPy arguments and results cross through shoal's
shared-memory arena, so no temporary memory-mapped files are written.

The pool is kept between ``Parallel`` calls with the same settings (starting one is what
costs), and replaced when the settings change.

Example:
    >>> import joblib, shoal.joblib
    >>> with joblib.parallel_config(backend="shoal", n_jobs=2):
    ...     joblib.Parallel()(joblib.delayed(pow)(2, n) for n in range(5))
    [1, 2, 4, 8, 16]
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

import joblib
from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
)

import shoal

__all__ = ["ShoalBackend"]

_JOBLIBS_OWN = frozenset({"max_nbytes", "mmap_mode", "temp_folder", "context", "verbose"})

# The pool joblib calls share while their settings stay the same, with those settings.
_pool_lock = threading.Lock()
_kept: tuple[tuple[Any, ...], shoal.Pool] | None = None


def _run_batch(batch: Callable[[], Any]) -> Any:
    # The batch travels as an argument, not as the function: arguments' large buffers
    # go through the arena, and one function serves every batch.
    return batch()


def _limit_threads(env: dict[str, str], limit: int) -> None:
    """A worker's initializer: thread pools of BLAS and OpenMP libraries get ``limit``
    threads (variables for libraries loaded later; threadpoolctl for loaded ones)."""
    os.environ.update(env)
    with contextlib.suppress(ImportError):
        import threadpoolctl

        # Kept for the worker's life: the limits hold while the object lives.
        global _thread_limits
        _thread_limits = threadpoolctl.threadpool_limits(limits=limit)


_thread_limits: object = None


def _in_a_shoal_worker() -> bool:
    from shoal._process.worker import in_worker

    return in_worker()


class _Outcome:
    """What joblib hands back to ``retrieve_result_callback``: a batch's value or error."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


class ShoalBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's ``"shoal"`` backend; see the module's documentation.

    Args:
        nesting_level: given by joblib.
        inner_max_num_threads: the threads a worker's BLAS/OpenMP and nested calls may
            use (default: ``CPUs // n_jobs``).
        shoal_backend: where the work runs, as :class:`shoal.Pool`'s ``backend``.
        pool_options: :class:`shoal.Pool`'s other options.
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    default_n_jobs = 1

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        shoal_backend: str = "process",
        **pool_options: Any,
    ) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self._shoal_backend = shoal_backend
        self._pool_options = pool_options
        self._pool: shoal.Pool | None = None
        self._n_jobs = 1
        # Threads share memory (joblib's require="sharedmem" may then use this backend).
        self.uses_threads = shoal_backend == "thread"
        self.supports_sharedmem = shoal_backend == "thread"

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs`` as a count: -1 is every CPU, -2 all but one...; 1 inside a shoal
        worker (its nested calls must not start a pool per worker)."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None or _in_a_shoal_worker():
            return 1
        if n_jobs < 0:
            n_jobs = max((os.cpu_count() or 1) + 1 + n_jobs, 1)
        return n_jobs

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Finds (or starts) the pool for ``n_jobs`` workers."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        self._n_jobs = n_jobs
        # joblib's own settings for its memory-mapping pools (max_nbytes, mmap_mode,
        # temp_folder, context, verbose) have no use here: shoal's arena carries large
        # arrays. Anything else is the Pool's.
        options = {k: v for k, v in backend_kwargs.items() if k not in _JOBLIBS_OWN}
        self._pool = self._pool_for(n_jobs, {**self._pool_options, **options})
        return n_jobs

    def _pool_for(self, n_jobs: int, options: dict[str, Any]) -> shoal.Pool:
        global _kept
        env = self._prepare_worker_env(n_jobs)
        limit = int(env["OMP_NUM_THREADS"])
        # (The pid: a process forked from one with a kept pool cannot use that pool.)
        key = (
            os.getpid(),
            n_jobs,
            self._shoal_backend,
            sorted(options.items()),
            sorted(env.items()),
        )
        with _pool_lock:
            if _kept is not None and _kept[0] == key and _kept[1]._state == "RUN":
                return _kept[1]
            if _kept is not None and _kept[0][0] == os.getpid():
                _kept[1].terminate()
            initializer = None if self._shoal_backend == "thread" else _limit_threads
            if self._shoal_backend == "process":
                # A batch never waits behind a slow one on a busy worker (joblib's
                # batches are long enough that a round trip each costs nothing).
                options.setdefault("prefetch", 1)
            pool = shoal.Pool(
                n_jobs,
                initializer,
                (env, limit),
                backend=self._shoal_backend,
                **options,
            )
            _kept = (key, pool)
            return pool

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None) -> Any:
        """Runs one batch; ``callback`` gets its outcome."""
        assert self._pool is not None, "configure() first"
        if callback is None:
            return self._pool.apply_async(_run_batch, (func,))
        return self._pool.apply_async(
            _run_batch,
            (func,),
            callback=lambda value: callback(_Outcome(value)),
            error_callback=lambda error: callback(_Outcome(error=error)),
        )

    def retrieve_result_callback(self, out: _Outcome) -> Any:
        """A batch's list of values, or its error raised."""
        if out.error is not None:
            raise out.error
        return out.value

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """Calls inside a worker: threads, at most ``CPUs // n_jobs`` of them."""
        level = (self.nesting_level or 0) + 1
        inner = self.inner_max_num_threads or max((os.cpu_count() or 1) // self._n_jobs, 1)
        if inner == 1 or level > 1:
            return SequentialBackend(nesting_level=level), None
        return ThreadingBackend(nesting_level=level), inner

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """After a batch's error: running batches are killed (the process backend kills
        their workers); a fresh pool is started if joblib will go on."""
        global _kept
        with _pool_lock:
            if _kept is not None and _kept[1] is self._pool:
                _kept = None
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)

    def terminate(self) -> None:
        """The end of a ``Parallel`` call: the pool is kept for the next one."""
        self._pool = None
        self.reset_batch_stats()


joblib.register_parallel_backend("shoal", ShoalBackend)
