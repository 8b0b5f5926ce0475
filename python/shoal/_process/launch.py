"""Starting a process-pool worker: by the zygote (the default), by spawning a fresh
interpreter, or by forking the pool's own process.

Each way hands the worker the same descriptors (``shoal._process.worker.main``) and gives
the engine a handle on the new process: a pidfd from the zygote, or the child itself.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable
from typing import Any, Final, Literal

from shoal._process.forking import fork
from shoal._process.handover import (
    FdCollector,
    ForkOnly,
    dumps_for_workers,
    resource_tracker_fd,
)
from shoal._process.identity import Lineage, next_number
from shoal._process.preload import preload_parent_modules
from shoal._process.worker import WorkerConfig, forget_init, keep_init, main
from shoal._process.zygote import _bootstrap, shared_zygote
from shoal._shoal import PoolEngine
from shoal._wire.pickling import dumps_callable
from shoal.errors import ShoalError

__all__ = [
    "START_METHODS",
    "StartMethod",
    "WorkerSetup",
    "check_start_method",
    "launch",
    "set_default_start_method",
]

StartMethod = Literal["zygote", "spawn", "fork"]
START_METHODS: Final[tuple[StartMethod, ...]] = ("zygote", "spawn", "fork")
_FIRST_FD: Final = 3


# What ``start_method=None`` means (``shoal.set_start_method`` changes it).
_default_method: StartMethod = "zygote"


def set_default_start_method(method: str | None) -> None:
    """Makes ``method`` what pools given no start method use (``None``: the zygote)."""
    global _default_method
    _default_method = check_start_method(method, default="zygote")


def check_start_method(method: str | None, *, default: StartMethod | None = None) -> StartMethod:
    """``method`` checked (``None`` means the default, ``"zygote"`` unless
    ``shoal.set_start_method`` said otherwise); ``ValueError`` naming the choices."""
    if method is None:
        return _default_method if default is None else default
    for known in START_METHODS:
        if method == known:
            return known
    choices = ", ".join(repr(m) for m in START_METHODS)
    raise ValueError(f"unknown start method {method!r}; choose one of {choices}")


class WorkerSetup:
    """What every worker of one pool starts with: the pickled settings in a memfd, and
    the descriptors the initializer's arguments need. Built once per pool.

    ``method`` is how the pool starts its workers: the one asked for, or ``"fork"`` when
    none was asked for and the initializer's arguments hold an object that only forking
    carries (:mod:`shoal._process.handover`) and forking is safe (no thread but shoal's).
    """

    def __init__(
        self,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        limit: int | None,
        arena_fd: int,
        requested: str | None = None,
        worker_exit: Callable[[], object] | None = None,
        worker_names: str = "ForkPoolWorker",
        max_memory: int | None = None,
    ) -> None:
        self.method = check_start_method(requested)
        # Raises PicklingError here, in Pool(), if it cannot be sent.
        farewell = None if worker_exit is None else dumps_callable(worker_exit)
        collector = FdCollector()
        init = None
        self.kept_init = False
        if initializer is not None:
            try:
                init = dumps_for_workers((initializer, initargs), collector)
            except ForkOnly as exc:
                _close_all(collector.fds)
                collector.fds = []
                self.method = _fork_instead(exc.obj, requested)
                self.kept_init = True
            except BaseException:
                _close_all(collector.fds)
                raise
        self.tracker_fd = resource_tracker_fd()
        config = WorkerConfig(
            init=init,
            init_kept=self.kept_init,
            limit=limit,
            farewell=farewell,
            sys_path=list(sys.path),
            cwd=os.getcwd(),
            authkey=bytes(multiprocessing.current_process().authkey),
            parent=os.getpid(),
            lineage=Lineage.of_this_process(worker_names),
            tracker=self.tracker_fd is not None,
            max_memory=max_memory,
        )
        self.config_fd = os.memfd_create("shoal-worker-config", os.MFD_CLOEXEC)
        os.write(self.config_fd, pickle.dumps(config, protocol=5))
        if self.kept_init and initializer is not None:
            # Workers forked from here find it by their config descriptor's number.
            keep_init(self.config_fd, initializer, initargs)
        self.inherited = collector.fds
        # The pool's shared-memory arena (the pool keeps it open; every worker gets a copy).
        self.arena_fd = arena_fd
        if self.method == "zygote":
            preload_parent_modules()

    def close(self) -> None:
        """Closes this process's descriptors (workers keep their own copies)."""
        if self.kept_init:
            forget_init(self.config_fd)
        tracker = [] if self.tracker_fd is None else [self.tracker_fd]
        _close_all([self.config_fd, *tracker, *self.inherited])
        self.inherited = []
        self.tracker_fd = None

    def fds(self) -> list[int]:
        """What every worker is given after its rings and bell: its config, the pool's
        arena, the resource tracker (if any), then what the initializer's arguments need."""
        tracker = [] if self.tracker_fd is None else [self.tracker_fd]
        return [self.config_fd, self.arena_fd, *tracker, *self.inherited]


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _fork_instead(obj: object, requested: str | None) -> StartMethod:
    """``"fork"``, if the pool may fork its workers to carry ``obj``; otherwise the error
    that says why not and what to do."""
    what = f"{type(obj).__module__}.{type(obj).__qualname__}"
    fixes = (
        f"make it with multiprocessing.get_context('spawn').{type(obj).__name__}(...) or use "
        "shoal's own (shoal.Lock, shoal.Queue...), which reach workers however they start"
    )
    if requested is not None and requested != "fork":
        raise ShoalError(
            f"the pool's initargs hold a {what} of multiprocessing's 'fork' context, which "
            "exists only in processes forked from the one that made it, but this pool "
            f"starts its workers by {requested!r}: {fixes}, or pass start_method='fork'"
        )
    # As multiprocessing does, it forks even while other threads run (fork() warns then,
    # on Python 3.12 and later: see shoal._process.forking).
    return "fork"


def launch(
    engine: PoolEngine,
    method: StartMethod,
    setup: WorkerSetup,
    limit: int | None,
    index: int = 0,
) -> tuple[int, int, int]:
    """Starts one worker for ``engine`` by ``method``, as worker ``index`` of its pool:
    its engine id, pid and number (its name ends in ``-<number>``). On
    failure, the engine gets back what the worker was given and the error propagates."""
    worker, tasks, results, bell = engine.add_worker(limit)
    fds = [tasks, results, bell, *setup.fds()]
    number = next_number()
    try:
        if method == "zygote":
            pid, pidfd = shared_zygote().fork(fds, number, index)
            try:
                engine.attach_pidfd(worker, pidfd)
            finally:
                os.close(pidfd)
        elif method == "spawn":
            count = len(fds)
            source = _bootstrap(
                "from shoal._process.worker import main; "
                f"main(range({_FIRST_FD}, {_FIRST_FD + count}), {number}, forked=False,"
                f" index={index})"
            )
            targets = [(fd, _FIRST_FD + i) for i, fd in enumerate(fds)]
            pid = engine.spawn_worker(worker, sys.executable, ["-c", source], [], targets)
        else:
            pid = fork()
            if pid == 0:  # pragma: no cover - runs in the child, which never returns
                main(fds, number, forked=True, index=index)
            engine.attach_child(worker, pid)
    except BaseException:
        engine.abandon(worker)
        raise
    finally:
        for fd in (tasks, results, bell):
            os.close(fd)
    return worker, pid, number
