"""``shoal.Process``: multiprocessing's ``Process``, its child forked from shoal's zygote.

A program that starts a ``multiprocessing.Process`` under spawn or forkserver (Python
3.14's default on Linux) must guard its script with ``if __name__ == "__main__":`` and
can only pass a target multiprocessing can pickle by name. A ``shoal.Process`` has the
same API (it is a ``multiprocessing.process.BaseProcess``), but its child is forked from
shoal's zygote, a fresh interpreter that never runs the program's script: no guard is
needed, and any callable is a target (a lambda, a closure, a bound method, a subclass
defined in the script with its own ``run``), sent by value with cloudpickle. Its
arguments may be shoal's or multiprocessing's queues, locks, values, events, pipes and
connections: their descriptors go to the child as they do to a spawned one.

Under the fork start method (the one the program set, or the default up to Python 3.13)
it is multiprocessing's fork, as it was. The child dies with the program: the zygote
exits when the program does, however it ends, and takes its children with it; at a
normal exit, daemonic children are terminated and the others joined first, as
multiprocessing does.

Example:
    >>> import shoal
    >>> results = shoal.Queue()
    >>> child = shoal.Process(target=lambda q: q.put("hello"), args=(results,))
    >>> child.start(); results.get(timeout=30)
    'hello'
    >>> child.join(30); child.exitcode
    0
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import pickle
import select
import signal
import sys
from collections.abc import Iterator
from multiprocessing import process, util
from typing import Any

__all__ = ["ForkServerProcess", "Process", "SpawnProcess", "ZygotePopen", "process_class"]


class ZygotePopen:
    """How a ``shoal.Process`` starts and watches its child: the object
    ``BaseProcess`` keeps as ``_popen`` (``poll``, ``wait``, ``terminate``, ``kill``,
    ``interrupt``, ``close``, ``sentinel``, ``pid``, ``returncode``)."""

    method = "zygote"

    def __init__(self, process_obj: process.BaseProcess) -> None:
        from shoal._process.child import ChildConfig
        from shoal._process.handover import FdCollector, dumps_for_workers, resource_tracker_fd
        from shoal._process.identity import Lineage
        from shoal._process.preload import preload_parent_modules
        from shoal._process.zygote import shared_zygote

        util._flush_std_streams()  # type: ignore[attr-defined]
        self.returncode: int | None = None
        collector = FdCollector()
        # Raises shoal's PicklingError, naming the part, for what cannot be sent; and
        # ForkOnly for an object only a fork carries (the caller forks instead).
        data = dumps_for_workers(process_obj, collector)
        # The program's resource tracker, as multiprocessing's children reach it.
        tracker = [fd] if (fd := resource_tracker_fd()) is not None else []
        config = ChildConfig(
            process=data,
            sys_path=list(sys.path),
            cwd=os.getcwd(),
            parent=os.getpid(),
            lineage=Lineage.of_this_process(""),
            tracker=bool(tracker),
        )
        config_fd = os.memfd_create("shoal-process-config", os.MFD_CLOEXEC)
        try:
            os.write(config_fd, pickle.dumps(config, protocol=5))
            preload_parent_modules()
            self._zygote = shared_zygote()
            self.pid, self.sentinel = self._zygote.start_process(
                [config_fd, *tracker, *collector.fds]
            )
        finally:
            for fd in (config_fd, *tracker, *collector.fds):
                os.close(fd)
        # The pidfd: readable once the child exits; closed with this object.
        self.finalizer: Any = util.Finalize(self, os.close, (self.sentinel,))

    def duplicate_for_child(self, fd: int) -> int:
        """multiprocessing's hook; not used (the arguments were pickled at start)."""
        return fd

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        """The exit code (minus the signal that killed it), or ``None`` while it runs
        (``flag=0`` waits for it)."""
        if self.returncode is None:
            ready, _, _ = select.select([self.sentinel], [], [], 0 if flag else None)
            if not ready:
                return None
            # The zygote reaped it: only the zygote knows how it ended.
            status = self._zygote.exit_status(self.pid)
            if status is None:  # the zygote is gone, and took its children with it
                self.returncode = -signal.SIGKILL
            else:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Waits up to ``timeout`` seconds for the child to end; its exit code or
        ``None``."""
        if self.returncode is None and timeout is not None:
            from multiprocessing.connection import wait

            if not wait([self.sentinel], timeout):
                return None
        return self.poll(os.WNOHANG if timeout == 0.0 else 0)

    def _send_signal(self, sig: int) -> None:
        if self.returncode is None:
            # Through the pidfd: never a process that took a reaped child's pid.
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.sentinel, sig)

    def interrupt(self) -> None:
        """Sends ``SIGINT`` (a ``KeyboardInterrupt`` in the child)."""
        self._send_signal(signal.SIGINT)

    def terminate(self) -> None:
        """Sends ``SIGTERM``."""
        self._send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Sends ``SIGKILL``."""
        self._send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Lets go of the child's pidfd."""
        self.finalizer()


def _fork_popen(process_obj: process.BaseProcess) -> Any:
    """multiprocessing's fork of the program's process, but forked by shoal: the child dies
    with the program (multiprocessing's would outlive a killed parent), and a warning
    made an error cannot leave a child behind (see ``shoal._process.forking``)."""
    from multiprocessing.popen_fork import Popen

    from shoal._process.forking import fork

    class ForkPopen(Popen):
        def _launch(self, process_obj: process.BaseProcess) -> None:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            with _keeping_the_tracker():
                self.pid = fork()
            if self.pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    os.close(parent_r)
                    os.close(parent_w)
                    code = run_in_child(process_obj, child_r)
                finally:
                    os._exit(code)
            os.close(child_w)
            os.close(child_r)
            self.finalizer = util.Finalize(self, util.close_fds, (parent_r, parent_w))  # type: ignore[attr-defined]
            self.sentinel = parent_r

    return ForkPopen(process_obj)


def run_in_child(process_obj: process.BaseProcess, parent_sentinel: int | None) -> int:
    """Runs ``process_obj`` in its new child as multiprocessing's children run (and, as
    spawned children on every Python and forked ones from 3.14, with the exit handlers
    the child registers run as it leaves); its exit code."""
    atexit._clear()  # (the parent's handlers are not the child's)
    atexit.register(util._exit_function)  # type: ignore[attr-defined]
    try:
        code: int = process_obj._bootstrap(parent_sentinel=parent_sentinel)  # type: ignore[attr-defined]
    finally:
        atexit._run_exitfuncs()
    return code


@contextlib.contextmanager
def _keeping_the_tracker() -> Iterator[None]:
    """Tells Python 3.15's resource tracker that a fork's child keeps the parent's
    tracker (as multiprocessing's fork does; a plain fork's child drops it)."""
    intent = getattr(sys.modules.get("multiprocessing.resource_tracker"), "_fork_intent", None)
    if intent is None:
        yield
        return
    intent.preserve_fd = True
    try:
        yield
    finally:
        intent.preserve_fd = False


def _popen(process_obj: process.BaseProcess) -> Any:
    """The child of ``process_obj``: by the zygote, or by a fork when an argument holds
    an object that only a fork carries (a lock of the fork context)."""
    from shoal._process.handover import ForkOnly

    try:
        return ZygotePopen(process_obj)
    except ForkOnly:
        return _fork_popen(process_obj)


class Process(process.BaseProcess):
    """``multiprocessing.Process``, its child forked from shoal's zygote unless the
    program chose the fork start method (see the module's documentation): no
    ``__main__`` guard, any callable as target.

    Example:
        >>> import shoal
        >>> def greet(name):
        ...     print(f"hello {name} from {shoal.current_process().name}")
        >>> p = shoal.Process(target=greet, args=("world",), name="greeter")
        >>> p.start(); p.join(30); p.exitcode
        0
    """

    _start_method = None

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        from shoal._process.identity import program_start_method

        if program_start_method() == "fork":
            return _fork_popen(process_obj)
        return _popen(process_obj)

    def interrupt(self) -> None:
        """Sends ``SIGINT`` to the child (Python 3.14's ``Process.interrupt``, on every
        Python): a ``KeyboardInterrupt`` there, unless it handles the signal."""
        self._check_closed()  # type: ignore[attr-defined]
        popen: Any = self._popen  # type: ignore[attr-defined]
        popen.interrupt() if hasattr(popen, "interrupt") else os.kill(popen.pid, signal.SIGINT)


class SpawnProcess(Process):
    """A ``shoal.get_context("spawn").Process``: a ``shoal.Process`` named as
    multiprocessing names its spawn context's (``SpawnProcess-1``), always forked from
    the zygote (which is what spawn promises: a child that inherits nothing)."""

    _Popen = staticmethod(_popen)


class ForkServerProcess(Process):
    """A ``shoal.get_context("forkserver").Process``, as :class:`SpawnProcess` is spawn's."""

    _Popen = staticmethod(_popen)


def process_class(method: str) -> type[process.BaseProcess]:
    """The ``Process`` of a context of start method ``method``, as ``get_context(method)``
    gives it: multiprocessing's own for ``fork``, shoal's for ``spawn`` and
    ``forkserver``.

    >>> process_class("spawn").__name__, process_class("fork").__module__
    ('SpawnProcess', 'multiprocessing.context')
    """
    if method == "fork":
        fork: type[process.BaseProcess] = multiprocessing.get_context("fork").Process
        return fork
    return SpawnProcess if method == "spawn" else ForkServerProcess
