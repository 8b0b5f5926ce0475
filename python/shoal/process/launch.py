"""Starting a process-pool worker: by the zygote (the default), by spawning a fresh
interpreter, or by forking the pool's own process.

Each way hands the worker the same descriptors (``shoal.process.worker.main``) and gives
the engine a handle on the new process: a pidfd from the zygote, or the child itself.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import pickle
import sys
from collections.abc import Callable
from typing import Any, Final, Literal

from shoal._pickling import dumps_callable
from shoal._shoal import PoolEngine
from shoal.process.identity import Lineage, next_number
from shoal.process.worker import InheritedFd, WorkerConfig, main
from shoal.process.zygote import _bootstrap, shared_zygote

__all__ = ["START_METHODS", "StartMethod", "WorkerSetup", "check_start_method", "launch"]

StartMethod = Literal["zygote", "spawn", "fork"]
START_METHODS: Final[tuple[StartMethod, ...]] = ("zygote", "spawn", "fork")
_FIRST_FD: Final = 3


def check_start_method(method: str | None) -> StartMethod:
    """``method`` checked (``None`` means ``"zygote"``); ``ValueError`` naming the choices."""
    if method is None:
        return "zygote"
    for known in START_METHODS:
        if method == known:
            return known
    choices = ", ".join(repr(m) for m in START_METHODS)
    raise ValueError(f"unknown start method {method!r}; choose one of {choices}")


class _FdCollector:
    """Stands in for multiprocessing's "process being started" while the initializer's
    arguments are pickled: objects that pass a descriptor to a new child (``shoal.Queue``,
    ``multiprocessing`` queues and connections) hand it here, and the worker gets it at
    start (``shoal.process.worker.InheritedFd``)."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(os.dup(fd))
        return len(self.fds) - 1

    def DupFd(self, index: int) -> InheritedFd:
        return InheritedFd(index)


class WorkerSetup:
    """What every worker of one pool starts with: the pickled settings in a memfd, and
    the descriptors the initializer's arguments need. Built once per pool."""

    def __init__(
        self,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        limit: int | None,
        arena_fd: int,
    ) -> None:
        collector = _FdCollector()
        init = None
        if initializer is not None:
            multiprocessing.context.set_spawning_popen(collector)  # type: ignore[arg-type]
            try:
                init = dumps_callable((initializer, initargs))
            finally:
                multiprocessing.context.set_spawning_popen(None)
        config = WorkerConfig(
            init=init,
            limit=limit,
            sys_path=list(sys.path),
            cwd=os.getcwd(),
            authkey=bytes(multiprocessing.current_process().authkey),
            parent=os.getpid(),
            lineage=Lineage.of_this_process(),
        )
        self.config_fd = os.memfd_create("shoal-worker-config", os.MFD_CLOEXEC)
        os.write(self.config_fd, pickle.dumps(config, protocol=5))
        self.inherited = collector.fds
        # The pool's shared-memory arena (the pool keeps it open; every worker gets a copy).
        self.arena_fd = arena_fd

    def close(self) -> None:
        """Closes this process's descriptors (workers keep their own copies)."""
        for fd in (self.config_fd, *self.inherited):
            os.close(fd)
        self.inherited = []


def launch(engine: PoolEngine, method: StartMethod, setup: WorkerSetup, limit: int | None) -> None:
    """Starts one worker for ``engine`` by ``method``; on failure, the engine gets back
    what the worker was given and the error propagates."""
    worker, tasks, results, bell = engine.add_worker(limit)
    fds = [tasks, results, bell, setup.config_fd, setup.arena_fd, *setup.inherited]
    number = next_number()
    try:
        if method == "zygote":
            pid, pidfd = shared_zygote().fork(fds, number)
            try:
                engine.attach_pidfd(worker, pidfd)
            finally:
                os.close(pidfd)
        elif method == "spawn":
            count = len(fds)
            source = _bootstrap(
                "from shoal.process.worker import main; "
                f"main(range({_FIRST_FD}, {_FIRST_FD + count}), {number}, forked=False)"
            )
            targets = [(fd, _FIRST_FD + i) for i, fd in enumerate(fds)]
            engine.spawn_worker(worker, sys.executable, ["-c", source], [], targets)
        else:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which never returns
                main(fds, number, forked=True)
            engine.attach_child(worker, pid)
    except BaseException:
        engine.abandon(worker)
        raise
    finally:
        for fd in (tasks, results, bell):
            os.close(fd)
