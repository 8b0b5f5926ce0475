"""The loop every process-pool worker runs, whichever way it was started.

A worker gets five or six descriptors: its task ring, its result ring, the pool's bell, a
memfd holding the pool's settings (``WorkerConfig``, pickled), the pool's shared-memory
arena and, when the pool's process has one, its multiprocessing resource tracker; then
any descriptors its initializer's arguments need (a ``shoal.Queue`` in ``initargs``).
It then takes messages
from its task ring: a function to keep (pickled once per pool, cached here by id), a chunk
to run (``shoal._process.chunks``), or the order to stop.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, cast

from shoal._current_worker import become_process_worker
from shoal._process.chunks import ChunkRunner
from shoal._process.identity import Lineage, become_worker, leave
from shoal._process.messages import Farewell
from shoal._shoal import MSG_DEFINE, MSG_FORGET, MSG_STOP, MSG_TASK, Arena, WorkerLink
from shoal._wire.failure import Failure
from shoal._wire.pickling import dumps_detached, loads
from shoal.errors import ShoalError

__all__ = [
    "InheritedFd",
    "WorkerConfig",
    "forget_init",
    "in_worker",
    "inherited_fd",
    "keep_init",
    "main",
]


# How often an idle worker checks that the process that started it is still there.
_PARENT_CHECK: Final = 0.25
# How often a worker started by the pool's own process checks that it is still there.
_PARENT_WATCH: Final = 0.1

_inherited: list[int] = []
# Initializers whose arguments only forking carries, kept by pools of this process for the
# workers they fork, by the number of the pool's config descriptor (a forked worker gets
# that descriptor under the same number and finds its entry in its copy of this dict).
_kept_inits: dict[int, tuple[Callable[..., object], tuple[Any, ...]]] = {}
_serving = False


class WorkerConfig(NamedTuple):
    """What every worker of a pool is told when it starts.

    Attributes:
        init: the pickled ``(initializer, initargs)``, or ``None``.
        init_kept: ``(initializer, initargs)`` was not pickled: the pool kept it in its own
            process (:func:`keep_init`) and forks its workers from there.
        limit: chunks to run before exiting (``maxtasksperchild``), or ``None``.
        farewell: the pickled ``worker_exit`` hook, run as the worker leaves, or ``None``.
        sys_path: the parent's ``sys.path``, so modules import as they do there.
        cwd: the parent's working directory.
        authkey: the parent's ``multiprocessing`` authkey, so objects it passes through
            multiprocessing's resource sharer can be collected.
        parent: the pid of the pool's process.
        lineage: what the worker takes on from the parent (its name, ``sys.argv``...).
        tracker: the worker is given the parent's multiprocessing resource tracker.
        max_memory: bytes of resident memory past which the worker leaves after a chunk
            (``max_memory_per_child``), or ``None``.
    """

    init: bytes | None
    init_kept: bool
    limit: int | None
    farewell: bytes | None
    sys_path: list[str]
    cwd: str
    authkey: bytes
    parent: int
    lineage: Lineage
    tracker: bool
    max_memory: int | None = None


class InheritedFd:
    """A descriptor a worker received at start, as ``multiprocessing.reduction.DupFd``
    rebuilds it (``detach`` gives a fresh duplicate, so the same object may be rebuilt by
    every task that names it)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        """A new descriptor for the inherited one, owned by the caller."""
        return inherited_fd(self.index)


def keep_init(key: int, initializer: Callable[..., object], initargs: tuple[Any, ...]) -> None:
    """Keeps ``initializer(*initargs)`` for the workers a pool forks from this process."""
    _kept_inits[key] = (initializer, initargs)


def forget_init(key: int) -> None:
    """Drops what :func:`keep_init` kept under ``key``."""
    _kept_inits.pop(key, None)


def in_worker() -> bool:
    """Whether this process is a pool worker."""
    return _serving


def inherited_fd(index: int) -> int:
    """A duplicate of the ``index``-th extra descriptor this worker was started with."""
    try:
        return os.dup(_inherited[index])
    except IndexError:
        raise ShoalError(
            "this process was not started with the descriptor an object refers to; "
            "pass it in the pool's initargs"
        ) from None


def main(fds: Sequence[int], number: int, *, forked: bool, index: int = 0) -> None:
    """Runs worker ``number`` on ``fds`` (task ring, result ring, bell, config, arena,
    the resource tracker if the config says so, then inherited) and exits the process
    when told to stop, at its task limit, or when the pool's process is gone.
    ``forked``: the process is a copy of another (zygote or fork) and must leave with
    ``os._exit``. ``index``: its place in the pool (``shoal.current_worker().index``)."""
    code = 0
    try:
        code = _serve(fds, number, forked, index)
    except BaseException:
        code = 1
        import traceback

        traceback.print_exc()
    finally:
        if forked:
            leave()
        _flush()
        if forked:
            os._exit(code)
    sys.exit(code)


def _serve(fds: Sequence[int], number: int, forked: bool, index: int) -> int:
    global _serving
    _serving = True
    tasks, results, bell, config_fd, arena_fd, *extra = fds
    # Ctrl-C in a terminal reaches the whole process group: the parent handles it and
    # stops the pool; a worker that died of it would just lose its task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # (A spawned worker started with SIGINT blocked, so that one sent meanwhile could not
    # end it: dropped now that it is ignored.)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # pread: every worker's descriptor shares one file offset.
    size = os.fstat(config_fd).st_size
    config: WorkerConfig = pickle.loads(os.pread(config_fd, size, 0))
    os.close(config_fd)
    sys.path[:] = config.sys_path
    with contextlib.suppress(OSError):
        os.chdir(config.cwd)
    import multiprocessing

    if config.tracker:
        # The parent's resource tracker, as multiprocessing's own children use it: what
        # a task attaches is not unlinked by a tracker of the worker's own when it exits.
        tracker: Any = importlib.import_module("multiprocessing.resource_tracker")
        tracker._resource_tracker._fd, *extra = extra  # (a private name the stubs leave out)
    _inherited[:] = extra

    # Objects the parent passed through multiprocessing's resource sharer (a queue in a
    # task's arguments) are collected from it with this key.
    multiprocessing.current_process().authkey = config.authkey
    parent_is_pool = os.getppid() == config.parent
    # A copy of the pool's process already has its __main__, argv and the rest.
    copy_of_parent = forked and parent_is_pool
    become_worker(config.lineage, number, config.parent, forked_from_parent=copy_of_parent)
    become_process_worker(index)
    if parent_is_pool:
        # Spawned or forked by the pool's process itself (not by the zygote, whose death
        # kills its children): leave as soon as that process is gone, even mid-task.
        _watch_parent(config.parent)
    link = WorkerLink(tasks, results, bell)
    runner = ChunkRunner(link, Arena.attach(arena_fd))
    for fd in (tasks, results, bell, arena_fd):
        os.close(fd)

    broken: Failure | None = None
    if config.init is not None or config.init_kept:
        try:
            init: Any = _kept_inits[config_fd] if config.init is None else loads(config.init)
            initializer, initargs = init
            initializer(*initargs)
        except Exception as exc:
            broken = Failure.capture_in_worker(exc)

    # The worker has started: a worker that dies before this died starting up (the pool
    # tells that from a worker killed later, and gives up only on the first kind), and
    # the pool's stats know the start-up time from it (the monotonic clock is the
    # machine's, the same in every process).
    link.send_ready(time.monotonic_ns() // 1000)
    functions: dict[int, Callable[..., Any] | Failure] = {}
    done = 0
    while True:
        message = link.recv(_PARENT_CHECK)
        if message is None:
            if os.getppid() != config.parent and not _parent_alive(config.parent):
                return 0
            continue
        kind, ident, func, payload = message
        if kind == MSG_DEFINE:
            try:
                functions[ident] = cast("Callable[..., Any]", loads(payload))
            except Exception as exc:
                functions[ident] = Failure.capture_in_worker(exc)
        elif kind == MSG_TASK:
            fn = functions.get(func)
            outcome = runner.run(fn, payload, broken, ident)
            link.send_result(ident, outcome)
            _flush()
            done += 1
            if _retiring(config, done):
                _say_farewell(link, config.farewell, broken)
                return 0
        elif kind == MSG_FORGET:
            functions.pop(ident, None)
        elif kind == MSG_STOP:
            _say_farewell(link, config.farewell, broken)
            return 0
        else:
            raise ShoalError(f"unknown message kind {kind} from the pool")


def _say_farewell(link: WorkerLink, hook: bytes | None, broken: Failure | None) -> None:
    """Runs the pool's ``worker_exit`` hook (unless the initializer failed: the worker
    never started) and sends the parent what it returned or raised."""
    if hook is None or broken is not None:
        return
    try:
        fn = cast("Callable[[], object]", loads(hook))
        outcome = Farewell(fn(), None)
    except Exception as exc:
        outcome = Farewell(None, Failure.capture_in_worker(exc, from_task=True))
    try:
        payload = dumps_detached(tuple(outcome))
    except Exception as exc:
        error = ShoalError(
            f"worker_exit returned a value that cannot be pickled ({type(exc).__name__}: "
            f"{exc}); return something picklable"
        )
        payload = dumps_detached(tuple(Farewell(None, Failure(error, ""))))
    link.send_farewell(payload)
    _flush()


def _retiring(config: WorkerConfig, done: int) -> bool:
    """Whether the worker leaves after its ``done``-th chunk: its task limit
    (``maxtasksperchild``), or its memory grew past the pool's limit
    (``max_memory_per_child``: a leaky task); the pool starts a fresh one in its place."""
    if config.limit is not None and done >= config.limit:
        return True
    return config.max_memory is not None and _resident_bytes() > config.max_memory


def _resident_bytes() -> int:
    """This process's resident memory, in bytes (``/proc/self/statm``: a read, no more)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def _watch_parent(parent: int) -> None:
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_WATCH)
        _flush()
        os._exit(1)

    threading.Thread(target=watch, name="shoal-parent-watch", daemon=True).start()


def _parent_alive(pid: int) -> bool:
    """Whether the pool's process still exists (a zygote's worker is not its child)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flush() -> None:
    """Hands printed text to the terminal or pipe now: a worker may be killed later."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
