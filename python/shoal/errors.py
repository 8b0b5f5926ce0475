"""shoal's exceptions.

Every error shoal raises on its own account derives from :class:`ShoalError`, and each one
also derives from the standard library exception with the same meaning, so code written for
``multiprocessing`` and ``pickle`` keeps catching what it caught before.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal._stdlib_errors import InitializerError, ResultNotSentError

__all__ = [
    "InitializerError",
    "PicklingError",
    "ResultNotSentError",
    "ShoalError",
    "TaskTimeoutError",
    "WorkerLostError",
]

_HINT = (
    "Objects that hold OS resources (locks, sockets, open files) cannot go to another "
    'process; create them inside the worker, or use backend="thread" to share objects '
    "without pickling."
)


class ShoalError(Exception):
    """Base class of the exceptions raised by shoal itself."""


class PicklingError(ShoalError, pickle.PicklingError):
    """An object could not be pickled to be sent to another process.

    Raised in place of the pickler's own error (which is chained as ``__cause__``), naming
    the innermost part of the object that could not be pickled.

    Attributes:
        path: where the culprit sits inside the object that was sent, as a Python
            expression rooted at ``obj``, e.g. ``"obj.conn"`` or ``"obj[1]['lock']"``.
        culprit_type: the qualified type name of the culprit, e.g. ``"socket.socket"`` or
            ``"_thread.lock"``.
        reason: the pickler's own message about the culprit, e.g.
            ``"cannot pickle 'socket' object"``.

    Example:
        >>> err = PicklingError("obj.conn", "socket.socket", "cannot pickle 'socket' object")
        >>> str(err).split(". ")[0]
        "cannot send obj.conn (socket.socket): cannot pickle 'socket' object"
    """

    path: str
    culprit_type: str
    reason: str

    def __init__(self, path: str, culprit_type: str, reason: str) -> None:
        """Builds the message from where the culprit is, its type and why it failed."""
        self.path = path
        self.culprit_type = culprit_type
        self.reason = reason
        detail = reason.strip().rstrip(".") or "cannot be pickled"
        super().__init__(f"cannot send {path} ({culprit_type}): {detail}. {_HINT}")

    def __reduce__(self) -> tuple[type[PicklingError], tuple[str, str, str]]:
        """Pickles by the constructor's arguments, so the error itself can cross processes."""
        return (type(self), (self.path, self.culprit_type, self.reason))


class WorkerLostError(ShoalError):
    """The worker running a task died before it answered (killed, crashed, out of memory).

    Only that task fails; the pool starts a new worker and carries on.

    Attributes:
        pid: the worker's process id, when known.
        exitcode: its exit code, if it exited.
        signal: the signal that killed it, if one did.
        out_of_memory: the kernel's out-of-memory killer most likely killed it (the
            system's count of OOM kills rose as it died).

    Example:
        >>> err = WorkerLostError(4242, None, 15, "killed by signal 15 (SIGTERM)")
        >>> print(err)
        worker process 4242 died while running this task: killed by signal 15 (SIGTERM)
        >>> err.signal
        15
    """

    pid: int | None
    exitcode: int | None
    signal: int | None
    out_of_memory: bool

    def __init__(
        self,
        pid: int | None,
        exitcode: int | None,
        signal: int | None,
        how: str | None,
        out_of_memory: bool = False,
    ) -> None:
        """Builds the message from what is known about the exit."""
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal
        self.out_of_memory = out_of_memory
        self._how = how
        who = f"worker process {pid}" if pid is not None else "a worker process"
        what = how or "it exited"
        hint = ""
        if out_of_memory:
            hint = (
                ", most likely by the kernel's out-of-memory killer (the system's count of"
                " OOM kills rose as it died): give each task less to hold, the pool fewer"
                " workers or the machine more memory; max_memory_per_child= replaces a"
                " worker whose memory keeps growing"
            )
        elif signal == 9:
            hint = (
                " (SIGKILL: if nobody killed it on purpose, the system may have run out of"
                " memory; see `dmesg` for the OOM killer)"
            )
        super().__init__(f"{who} died while running this task: {what}{hint}")

    def __reduce__(self) -> tuple[type[WorkerLostError], tuple[object, ...]]:
        """Pickles by the constructor's arguments."""
        args = (self.pid, self.exitcode, self.signal, self._how, self.out_of_memory)
        return (type(self), args)


class TaskTimeoutError(ShoalError, TimeoutError):
    """A task ran longer than its ``task_timeout``: its worker was killed and replaced,
    and only this task failed.

    Attributes:
        seconds: the limit it ran past.
        pid: the process id of the worker that was killed, when known.

    Example:
        >>> err = TaskTimeoutError(2.5, 4242)
        >>> isinstance(err, TimeoutError), err.seconds, err.pid
        (True, 2.5, 4242)
    """

    seconds: float
    pid: int | None

    def __init__(self, seconds: float, pid: int | None) -> None:
        """Builds the message from the limit and the worker."""
        self.seconds = seconds
        self.pid = pid
        who = f"its worker (pid {pid})" if pid is not None else "its worker"
        super().__init__(
            f"the task ran longer than its task_timeout of {seconds:g} s; {who} was killed"
            " and replaced"
        )

    def __reduce__(self) -> tuple[type[TaskTimeoutError], tuple[float, int | None]]:
        """Pickles by the constructor's arguments."""
        return (type(self), (self.seconds, self.pid))


# Defined in shoal._stdlib_errors, as shoal.errors' own: their standard-library bases
# (concurrent.futures.process, multiprocessing.pool) take tens of milliseconds to import,
# and every worker and zygote imports this module while it starts.
_ON_FIRST_USE = frozenset({"InitializerError", "ResultNotSentError"})


def __getattr__(name: str) -> Any:
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from shoal import _stdlib_errors

    value = getattr(_stdlib_errors, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ON_FIRST_USE})
