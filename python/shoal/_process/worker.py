"""The loop every process-pool worker runs, whichever way it was started.

A worker gets four descriptors: its task ring, its result ring, the pool's bell and a
memfd holding the pool's settings (``WorkerConfig``, pickled), plus any descriptors its
initializer's arguments need (a ``shoal.Queue`` in ``initargs``). It then takes messages
from its task ring: a function to keep (pickled once per pool, cached here by id), a chunk
to run, or the order to stop.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, cast

from shoal._buffers import MAGIC, OutOfBand, pack, unpack
from shoal._labels import LABEL_AFTER, PROGRESS_EVERY, describe_arguments
from shoal._pickling import dumps_detached, loads
from shoal._process.identity import Lineage, become_worker, leave
from shoal._shoal import MSG_DEFINE, MSG_FORGET, MSG_STOP, MSG_TASK, Arena, ShmBuffer, WorkerLink
from shoal._worker import become_process_worker
from shoal.errors import ShoalError

__all__ = [
    "CALL_APPLY",
    "CALL_ONE",
    "CALL_STAR",
    "CALL_WATCHED",
    "Failure",
    "InheritedFd",
    "WorkerConfig",
    "forget_init",
    "in_worker",
    "inherited_fd",
    "keep_init",
    "main",
]


# How a chunk's items are passed (shoal.backends.base.CallKind, as small ints).
CALL_ONE: Final = 0
CALL_STAR: Final = 1
CALL_APPLY: Final = 2
CALL_WATCHED: Final = 4
"""Added to the call code of a chunk a progress bar watches: the worker reports how far
it has got while the chunk runs (:class:`_Reporter`)."""
_CALL_NAMES: Final = ("one", "star", "apply")  # (CallKind's values, by code)

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
# The pool's shared-memory arena, for large arguments and results (set by _serve).
_arena: Arena | None = None
_out_of_band: OutOfBand | None = None


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


class Failure(NamedTuple):
    """A task's exception and its traceback, formatted here (a pickle drops it). The
    worker's own light twin of ``shoal.backends.base.Failure``: it keeps ``dataclasses``
    and ``traceback`` out of every worker's start."""

    exception: BaseException
    traceback: str

    @classmethod
    def capture(cls, exc: BaseException, *, from_task: bool = False) -> Failure:
        """The failure for ``exc``, with its traceback formatted now. ``from_task``: the
        exception came out of the user's function, and the traceback starts there (the
        worker's own frame that called it says nothing to the user)."""
        import traceback

        tb = exc.__traceback__
        if from_task and tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return cls(exc, "".join(traceback.format_exception(type(exc), exc, tb)))


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
    """Runs worker ``number`` on ``fds`` (task ring, result ring, bell, config, then
    inherited) and exits the process when told to stop, at its task limit, or when the
    pool's process is gone. ``forked``: the process is a copy of another (zygote or fork)
    and must leave with ``os._exit``. ``index``: its place in the pool
    (``shoal.current_worker().index``)."""
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
    # pread: every worker's descriptor shares one file offset.
    size = os.fstat(config_fd).st_size
    config: WorkerConfig = pickle.loads(os.pread(config_fd, size, 0))
    os.close(config_fd)
    sys.path[:] = config.sys_path
    with contextlib.suppress(OSError):
        os.chdir(config.cwd)
    _inherited[:] = extra
    import multiprocessing

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
    global _arena, _out_of_band
    _arena = Arena.attach(arena_fd)
    _out_of_band = OutOfBand(_arena)
    for fd in (tasks, results, bell, arena_fd):
        os.close(fd)

    broken: Failure | None = None
    if config.init is not None or config.init_kept:
        try:
            init: Any = _kept_inits[config_fd] if config.init is None else loads(config.init)
            initializer, initargs = init
            initializer(*initargs)
        except Exception as exc:
            broken = Failure.capture(exc)

    # Sent with the first answer: the parent's stats know the start-up time from it
    # (the monotonic clock is the machine's, the same in every process).
    ready: float | None = time.monotonic()
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
                functions[ident] = Failure.capture(exc)
        elif kind == MSG_TASK:
            fn = functions.get(func)
            outcome = _run(fn, payload, broken, ready, ident, link)
            ready = None
            link.send_result(ident, outcome)
            _flush()
            done += 1
            if config.limit is not None and done >= config.limit:
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
    outcome: tuple[Any, Any]
    try:
        fn = cast("Callable[[], object]", loads(hook))
        outcome = (fn(), None)
    except Exception as exc:
        outcome = (None, _wire({0: Failure.capture(exc, from_task=True)})[0])
    try:
        payload = dumps_detached(outcome)
    except Exception as exc:
        error = ShoalError(
            f"worker_exit returned a value that cannot be pickled ({type(exc).__name__}: "
            f"{exc}); return something picklable"
        )
        payload = dumps_detached((None, (error, "", None)))
    link.send_farewell(payload)
    _flush()


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


def _run(  # noqa: C901 (the task loop, inline on purpose)
    fn: Callable[..., Any] | Failure | None,
    payload: bytes,
    broken: Failure | None,
    ready: float | None,
    chunk: int,
    link: WorkerLink,
) -> bytes:
    """Runs one chunk and returns its pickled outcome ``(values, failures, elapsed, kept,
    ready, label)`` (see :func:`_encode`)."""
    started = time.perf_counter()
    views: list[ShmBuffer] = []
    try:
        decoded: Any
        if payload.startswith(MAGIC):
            # Large arguments stay in the parent's blocks (it frees them when this chunk
            # is answered), read in place.
            decoded, views = unpack(payload, _arena, own=False)
        else:
            decoded = loads(payload)
        call, items = decoded
        del decoded
    except Exception as exc:
        # The parent fails every task of the chunk with it.
        return _encode([None], {0: Failure.capture(exc)}, 0.0, _keep(views), ready)
    count = len(items)
    problem: Failure | None = broken
    if problem is None and isinstance(fn, Failure):
        problem = fn
    if problem is None and fn is None:
        problem = Failure.capture(ShoalError("the task's function never arrived"))
    if problem is not None or not callable(fn):
        problem = problem or Failure.capture(ShoalError("the task's function is not callable"))
        del items
        every = dict.fromkeys(range(count), problem)
        return _encode([None] * count, every, 0.0, _keep(views), ready)
    values: list[Any] = []
    failures: dict[int, Failure] = {}
    append = values.append
    remaining = iter(items)
    watched = call & CALL_WATCHED
    if watched:
        call ^= CALL_WATCHED
        _reporter(link).watch(chunk, values)
    while True:
        # Tight loops, one per call convention: a chunk of tiny tasks spends its time here.
        try:
            if call == CALL_ONE:
                for item in remaining:
                    append(fn(item))
            elif call == CALL_STAR:
                for item in remaining:
                    append(fn(*item))
            else:
                for args, kwargs in remaining:
                    append(fn(*args, **kwargs))
            break
        except BaseException as exc:
            # SystemExit and KeyboardInterrupt raised by a task end that task, not the
            # worker: its caller gets them as the task's error. The loop goes on with
            # the next item.
            failures[len(values)] = Failure.capture(exc, from_task=True)
            append(None)
    if watched:
        _reporter(link).watch(None, values)
    elapsed = time.perf_counter() - started
    label = None
    if elapsed >= LABEL_AFTER and count:
        label = describe_arguments(items[0], _CALL_NAMES[call])
    del items, remaining
    return _encode(values, failures, elapsed, _keep(views), ready, label)


class _Reporter:
    """Tells the pool how far the watched chunk running now has got, every
    :data:`PROGRESS_EVERY` seconds, from a thread of its own: the task loop pays nothing
    for it (it reads the length of the values list the loop appends to)."""

    def __init__(self, link: WorkerLink) -> None:
        self._link = link
        self._watched: tuple[int, list[Any]] | None = None
        import threading

        threading.Thread(target=self._report, name="shoal-progress", daemon=True).start()

    def watch(self, chunk: int | None, values: list[Any]) -> None:
        """Watches ``values`` of ``chunk`` from now on (``None``: nothing)."""
        self._watched = None if chunk is None else (chunk, values)

    def _report(self) -> None:
        told: tuple[int, int] | None = None
        while True:
            time.sleep(PROGRESS_EVERY)
            watched = self._watched
            if watched is None:
                continue
            chunk, values = watched
            now = (chunk, len(values))
            # (A report that cannot go at once is skipped: the next one says more.)
            if now[1] and now != told and self._link.send_progress(*now):
                told = now


_the_reporter: _Reporter | None = None


def _reporter(link: WorkerLink) -> _Reporter:
    global _the_reporter
    if _the_reporter is None:
        _the_reporter = _Reporter(link)
    return _the_reporter


def _keep(views: list[ShmBuffer]) -> list[int]:
    """The argument blocks something of this process still uses after the chunk (an
    array the task stored, or a result that is a view of an argument): this process
    takes them over, so that the parent does not free them, and frees them itself when
    they are no longer used. Returns their offsets, for the parent."""
    kept = []
    for view in views:
        # Every object rebuilt over a block holds an export of it (unpack hands out
        # memoryviews only), so a live export is exactly "still in use".
        if view.exports:
            view.adopt()
            kept.append(view.offset)
    return kept


def _encode(
    values: list[Any],
    failures: dict[int, Failure],
    elapsed: float,
    kept: list[int],
    ready: float | None,
    label: str | None = None,
) -> bytes:
    """Pickles a chunk's outcome: its values, failures, seconds, the argument blocks it
    kept, when this worker was ready (first answer only) and a description of its
    arguments (slow chunks only). A value or exception that cannot be pickled becomes
    that task's error, saying so, so that one bad result never loses the others."""
    wire = _wire(failures)
    try:
        return pack((values, wire, elapsed, kept, ready, label), _out_of_band)[0]
    except Exception:
        pass
    from shoal.backends.sendable import make_sendable  # (rarely needed: loaded then)

    make_sendable(values, failures, dumps_detached, Failure)
    wire = _wire(failures)
    return pack((values, wire, elapsed, kept, ready, label), _out_of_band)[0]


def _wire(failures: dict[int, Failure]) -> dict[int, tuple[BaseException, str, Any]]:
    # The cause travels beside its exception: pickling an exception drops __cause__.
    return {i: (f.exception, f.traceback, f.exception.__cause__) for i, f in failures.items()}


def _flush() -> None:
    """Hands printed text to the terminal or pipe now: a worker may be killed later."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
