"""The zygote: a fresh, single-threaded interpreter that forks pool workers and
``shoal.Process`` children on request. This module is the parent's handle on it; the
zygote's own side is ``shoal._process.zygote_server``.

The program's own process has threads (shoal's and often the user's), so forking it would
copy locks that no thread will ever release. Instead the first process pool or Process
starts one zygote with ``posix_spawn`` (``shoal._shoal.ChildProcess``); it imports shoal
and cloudpickle once, then forks a child for each request in about a millisecond. It
starts without ``site`` processing (``python -S``, with this process's ``sys.path``):
``.pth`` files can cost tens of milliseconds, and children do not run
``sitecustomize``. Every later pool of the process uses the same zygote.

Requests travel over a ``SOCK_SEQPACKET`` socket: the parent sends the child's
descriptors (``SCM_RIGHTS``), the zygote answers with the child's pid and a pidfd for
it, so the parent watches the right process even though it is not its child. The zygote
reaps its children as they exit (never before it has opened the pidfd of a new one, so
that the pidfd is always for the right process) and keeps their exit statuses for the
parent to ask, ignores ``SIGINT`` (Ctrl-C is the parent's to handle), and exits when the
parent's end of the socket closes, that is when the parent exits, however it exits; its
children die with it.

Its standard output and error are the program's, for its children's prints; what its own
imports print (at start, and in a preload: a notebook kernel's debugger warns as it is
imported) goes to ``/dev/null``, so that nothing shoal does on its own shows where the
user reads.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import sys
import threading
from typing import Final

from shoal._shoal import ChildProcess
from shoal.errors import ShoalError

__all__ = ["Zygote", "prestart", "retire_shared_zygote", "shared_zygote"]

_SOCKET_FD: Final = 3
_MAX_FDS: Final = 253  # SCM_RIGHTS' limit per message
_REPLY_TIMEOUT: Final = 30.0
_FORK: Final = b"fork "
_PROCESS: Final = b"process"
_STATUS: Final = b"status "
_PRELOAD: Final = b"preload"
_THREADED: Final = b"threaded "
# A preload imports whatever the program had imported: it may take long.
_PRELOAD_TIMEOUT: Final = 300.0
# Exit statuses of the zygote's children, kept until the parent asks (bounded).
_KEEP_STATUSES: Final = 4096


def _bootstrap(call: str) -> str:
    """Python source that gives the new interpreter this one's ``sys.path`` (so shoal,
    and modules that tasks name, import as they do here), then runs ``call``."""
    return f"import sys; sys.path[:] = {sys.path!r}; {call}"


class Zygote:
    """The parent's handle on a zygote process."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            source = _bootstrap(
                f"from shoal._process.zygote_server import serve; serve({os.getpid()})"
            )
            # -S: no site processing (.pth files can take tens of milliseconds); the
            # path it would build comes from this process instead.
            self._process = ChildProcess(
                sys.executable, ["-S", "-c", source], [], [(theirs.fileno(), _SOCKET_FD)]
            )
        finally:
            theirs.close()
        ours.settimeout(_REPLY_TIMEOUT)
        self._socket = ours
        self._lock = threading.Lock()
        self.owner = os.getpid()
        # Modules this zygote has imported, as far as its last preload said
        # (shoal._process.preload).
        self.preloaded: set[str] = set()

    @property
    def pid(self) -> int:
        """The zygote's process id."""
        return self._process.pid

    def fork(self, fds: list[int], number: int, index: int = 0) -> tuple[int, int]:
        """Forks worker ``number`` (``index`` in its pool), which runs on ``fds`` (see
        ``shoal._process.worker.main``). Returns its pid and a pidfd for it, which the
        caller must close."""
        return self._fork(_FORK + f"{number},{index}".encode(), fds)

    def start_process(self, fds: list[int]) -> tuple[int, int]:
        """Forks a ``shoal.Process``'s child, which runs on ``fds`` (see
        ``shoal._process.child.main``). Returns its pid and a pidfd for it, which the
        caller must close."""
        return self._fork(_PROCESS, fds)

    def _fork(self, request: bytes, fds: list[int]) -> tuple[int, int]:
        if len(fds) > _MAX_FDS:
            raise ShoalError(f"a child can be given at most {_MAX_FDS} descriptors")
        with self._lock:
            try:
                socket.send_fds(self._socket, [request], fds)
                reply, received, _, _ = socket.recv_fds(self._socket, 64, 1)
            except OSError as exc:
                raise ShoalError(f"the zygote (pid {self.pid}) stopped answering: {exc}") from exc
        if not reply or len(received) != 1:
            for fd in received:
                os.close(fd)
            status = self._process.wait(0.5)
            how = f" ({status})" if status else ""
            raise ShoalError(f"the zygote (pid {self.pid}) exited{how}; a new one will be started")
        return int(reply), received[0]

    def preload(self, names: list[str]) -> str | None:
        """Has the zygote import ``names`` before its next fork (failures ignored), and
        learns every module it then has (:attr:`preloaded`). Returns the module after
        whose import the zygote had a thread running: it must then fork no more (see
        :func:`retire_shared_zygote`)."""
        listing = os.memfd_create("shoal-preload", os.MFD_CLOEXEC)
        try:
            os.write(listing, "\n".join(names).encode())
            os.lseek(listing, 0, os.SEEK_SET)  # the zygote reads from this offset
            with self._lock:
                self._socket.settimeout(_PRELOAD_TIMEOUT)
                try:
                    socket.send_fds(self._socket, [_PRELOAD], [listing])
                    reply = self._socket.recv(4096)
                except OSError as exc:
                    message = f"the zygote (pid {self.pid}) stopped answering: {exc}"
                    raise ShoalError(message) from exc
                finally:
                    self._socket.settimeout(_REPLY_TIMEOUT)
            # The zygote wrote the names of all its modules over the listing.
            loaded = os.pread(listing, os.fstat(listing).st_size, 0).decode()
        finally:
            os.close(listing)
        self.preloaded.update(names)
        self.preloaded.update(loaded.split("\n"))
        if reply.startswith(_THREADED):
            return reply[len(_THREADED) :].decode()
        return None

    def exit_status(self, pid: int) -> int | None:
        """How the zygote's child ``pid`` ended, as ``os.waitpid`` reports it, or ``None``
        if the zygote does not know (it is still running, or was never its child)."""
        with self._lock:
            try:
                self._socket.send(_STATUS + str(pid).encode())
                reply = self._socket.recv(64)
            except OSError:
                return None
        return int(reply) if reply and reply != b"?" else None

    def close(self) -> None:
        """Closes the socket: the zygote exits on its own (its workers keep running)."""
        self._socket.close()
        # Reap it so that it does not linger as a zombie; it exits at once.
        self._process.wait(2.0)

    def alive(self) -> bool:
        """Whether the zygote is still running."""
        return self._process.wait(0) is None


_shared: Zygote | None = None
_shared_lock = threading.Lock()
# Zygotes that must fork no more, kept (their workers die with them) until the program
# exits.
_retired: list[Zygote] = []


def shared_zygote() -> Zygote:
    """This process's zygote, started on first use (and again if it died)."""
    global _shared
    with _shared_lock:
        if _shared is not None and _shared.owner == os.getpid() and not _shared.alive():
            _shared.close()  # it died: let go of its socket and reap it
            _shared = None
        if _shared is None or _shared.owner != os.getpid():
            _shared = Zygote()
        return _shared


def retire_shared_zygote(zygote: Zygote) -> None:
    """Stops using ``zygote`` for new workers (it had a thread after a preload): the next
    :func:`shared_zygote` starts a new one. It runs on for the workers it forked."""
    global _shared
    with _shared_lock:
        if _shared is zygote:
            _shared = None
            _retired.append(zygote)


_preload_started = False


def prestart() -> None:
    """Starts this process's zygote now, in the background, so that the first process
    pool finds it (nearly) ready: it takes a few tens of milliseconds to boot. Nothing is
    started inside a pool worker (a task that makes a pool of its own starts one then),
    nor when ``SHOAL_PRESTART=0`` is set."""
    # A worker has its loop's module loaded; any other process need not load it (with
    # cloudpickle and the rest) before the zygote is on its way.
    worker = sys.modules.get("shoal._process.worker")
    if (worker is not None and worker.in_worker()) or os.environ.get("SHOAL_PRESTART") == "0":
        return
    with contextlib.suppress(Exception):
        shared_zygote()
        # The zygote imports what the program has imported so far while the program
        # goes on; the first pool waits only for what is left (forks wait their turn).
        global _preload_started
        if not _preload_started:
            _preload_started = True
            from shoal._process.preload import preload_parent_modules

            threading.Thread(
                target=preload_parent_modules, name="shoal-preload", daemon=True
            ).start()


def _forget_in_child() -> None:
    # A child made by os.fork must start its own zygote; its copy of the parent's socket
    # would keep the parent's zygote alive after the parent exits.
    global _shared, _preload_started
    for zygote in [_shared, *_retired] if _shared is not None else _retired:
        with contextlib.suppress(OSError):
            zygote._socket.close()
    _shared = None
    _retired.clear()
    _preload_started = False


os.register_at_fork(after_in_child=_forget_in_child)


def _close_at_exit() -> None:
    # The zygote exits when its socket closes; closing it here, not in the garbage
    # collector at shutdown, keeps interpreter exit free of an unclosed-socket warning.
    global _shared
    zygotes = [_shared, *_retired] if _shared is not None else _retired
    if any(zygote.owner == os.getpid() for zygote in zygotes):
        # Its children die with it, so the program's Processes end first, as
        # multiprocessing's exit handler ends them (it would run after this one):
        # daemonic ones terminated, the others joined.
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            with contextlib.suppress(Exception):
                util._exit_function()
    for zygote in zygotes:
        if zygote.owner == os.getpid():
            with contextlib.suppress(OSError):
                zygote._socket.close()
    _shared = None
    _retired.clear()


atexit.register(_close_at_exit)
