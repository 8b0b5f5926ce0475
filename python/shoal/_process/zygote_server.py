"""The zygote's own side (``shoal._process.zygote`` is the parent's): the loop that
answers the parent's requests, forking pool workers and ``shoal.Process`` children,
reaping them and keeping their exit statuses, and preloading modules.

It runs in the fresh interpreter ``Zygote`` starts (``serve``). What the zygote's imports
print goes to ``/dev/null`` (:func:`_quiet`); its children print to the program's
standard output and error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

from shoal._process.zygote import (
    _FORK,
    _KEEP_STATUSES,
    _MAX_FDS,
    _PRELOAD,
    _PROCESS,
    _SOCKET_FD,
    _STATUS,
    _THREADED,
)
from shoal._shoal import die_with_parent

__all__ = ["serve"]

_statuses: dict[int, int] = {}


def _reap(signum: int = 0, frame: object = None) -> None:
    """Collects every child that has exited and keeps its status for the parent (SIGCHLD
    handler of the zygote)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if len(_statuses) >= _KEEP_STATUSES:
            _statuses.pop(next(iter(_statuses)))
        _statuses[pid] = status


def _status_of(pid: int) -> bytes:
    """The status of child ``pid`` for the parent, reaping it first if it just exited."""
    if pid not in _statuses:
        _reap()
    status = _statuses.pop(pid, None)
    return b"?" if status is None else str(status).encode()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Sends what this process prints, at the descriptor level, to ``/dev/null`` for the
    duration: imports the zygote makes on its own print nowhere."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _preload(fds: list[int]) -> bytes:
    """Imports the modules listed in the descriptor the parent sent, and writes over the
    listing the names of every module this zygote now has (the parent sends none of them
    again); the reply."""
    from shoal._process.preload import import_all

    for fd in fds[1:]:
        os.close(fd)
    if not fds:
        return b"ok"
    try:
        with os.fdopen(fds[0], "r+b") as listing:
            names = listing.read().decode().split("\n")
            with _quiet():
                threaded = import_all(name for name in names if name)
            listing.seek(0)
            listing.truncate()
            listing.write("\n".join(sys.modules).encode())
    except (OSError, UnicodeDecodeError):
        return b"ok"
    return b"ok" if threaded is None else _THREADED + threaded.encode()


def serve(parent: int) -> None:
    """The zygote's main loop (run by the interpreter ``Zygote`` starts for ``parent``)."""
    if os.getppid() != parent:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # (Started with SIGINT blocked: one that came meanwhile was dropped just now.)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGCHLD, _reap)
    # What site would have added for interactive use (exit, quit, help), cheaply.
    import site

    site.setquit()
    site.setcopyright()
    site.sethelper()
    # Imported before the first fork, so that every child starts with them loaded.
    # (Every worker sets its identity in util, and reaches the program's resource tracker;
    # a Process's child runs as multiprocessing's, and its pipes are connections.)
    with _quiet():
        import multiprocessing.connection
        import multiprocessing.resource_tracker
        import multiprocessing.util  # noqa: F401

        import cloudpickle  # type: ignore[import-untyped]  # noqa: F401

        from shoal._mp import process  # noqa: F401
        from shoal._process import child, worker  # noqa: F401

    sock = socket.socket(fileno=_SOCKET_FD)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 64, _MAX_FDS)
        except OSError:
            return
        if not message:
            return  # the parent is gone
        if message == _PRELOAD:
            try:
                sock.send(_preload(fds))
            except OSError:
                return
            continue
        if message.startswith(_STATUS):
            for fd in fds:
                os.close(fd)
            try:
                sock.send(_status_of(int(message[len(_STATUS) :])))
            except (OSError, ValueError):
                return
            continue
        run = _child_entry(message, fds, worker)
        if run is None:
            for fd in fds:
                os.close(fd)
            continue
        if not _fork_child(sock, fds, run):
            return


def _child_entry(message: bytes, fds: list[int], worker: Any) -> Callable[[], None] | None:
    """What a forked child runs for a fork request: a pool worker or a ``shoal.Process``;
    ``None`` for a request that makes no sense."""
    if message == _PROCESS:
        return lambda: _start_process_child(fds)
    fields = message[len(_FORK) :].split(b",")
    if not message.startswith(_FORK) or len(fields) != 2 or not all(f.isdigit() for f in fields):
        return None
    number, index = int(fields[0]), int(fields[1])
    return lambda: worker.main(fds, number, forked=True, index=index)


def _start_process_child(fds: list[int]) -> None:
    from shoal._process import child

    child.main(fds)


def _fork_child(sock: socket.socket, fds: list[int], run: Callable[[], None]) -> bool:
    """Forks a child that runs ``run`` and dies with this zygote; sends the parent its pid
    and a pidfd. False once the parent is gone."""
    # SIGCHLD waits until the pidfd is open: a child that exits at once stays a zombie
    # until then, so its pid cannot be reaped and reused in between.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    # Taken before the fork: a child asking os.getppid() after this zygote died would be
    # told its new parent's pid (init's, or a subreaper's) and outlive the program.
    zygote = os.getpid()
    pid = os.fork()
    if pid == 0:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        if not die_with_parent(zygote):
            os._exit(1)
        run()
        os._exit(0)  # (run() leaves by os._exit itself)
    for fd in fds:
        os.close(fd)
    try:
        pidfd = os.pidfd_open(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    try:
        socket.send_fds(sock, [str(pid).encode()], [pidfd])
    except OSError:
        return False
    finally:
        os.close(pidfd)
    return True
