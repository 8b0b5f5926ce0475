"""Reading a worker process's end: why it ended (one :class:`ExitReason`), how (the
zygote's account, for its children), whether the OOM killer did it, and what to say when
workers keep dying as they start.

Example:
    >>> ExitReason.TIMED_OUT.value, ExitReason.RETIRED.value
    ('timeout', 'maxtasksperchild')
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from shoal._process.zygote import shared_zygote
from shoal._shoal import describe_exit
from shoal.backends._lives import RestartReason
from shoal.backends._restarts import GIVE_UP_AFTER, oom_kills
from shoal.errors import ShoalError, TaskTimeoutError, WorkerLostError

if TYPE_CHECKING:
    from shoal._shoal import WorkerExited

__all__ = [
    "ExitReason",
    "OomKills",
    "ask_zygote",
    "exit_reason",
    "lost_chunk_error",
    "start_up_failure",
]


class ExitReason(enum.Enum):
    """Why a worker process ended; its value is the restart reason ``Pool.stats()``
    counts when it is replaced."""

    TIMED_OUT = "timeout"
    """Killed by the pool: its task ran past its time limit."""
    RETIRED = "maxtasksperchild"
    """Left when asked: its task limit was reached, or the pool is closing."""
    OUTGREW = "max_memory_per_child"
    """Left between tasks, unasked, with exit code 0: its memory had passed
    ``max_memory_per_child``."""
    DIED = "died"
    """Anything else: a crash, a kill, an exit of its own."""

    @property
    def restart_reason(self) -> RestartReason:
        """The reason ``Pool.stats()`` records for the replacement."""
        return self.value


def exit_reason(exited: WorkerExited, code: int | None, max_memory: int | None) -> ExitReason:
    """Why the worker of ``exited`` ended, given its exit ``code`` (the zygote's, when
    only it knew) and the pool's ``max_memory_per_child``."""
    if exited.timed_out:
        return ExitReason.TIMED_OUT
    if exited.expected:
        return ExitReason.RETIRED
    if max_memory is not None and code == 0 and exited.lost is None:
        return ExitReason.OUTGREW
    return ExitReason.DIED


def lost_chunk_error(
    reason: ExitReason,
    limit: float | None,
    pid: int | None,
    how: tuple[int | None, int | None, str | None],
    out_of_memory: bool,
) -> ShoalError:
    """The error of the chunk a worker was running as it ended for ``reason``: its time
    ran out (``limit`` seconds), or the worker was lost (``how``: its exit code, signal
    and a description)."""
    if reason is ExitReason.TIMED_OUT and limit is not None:
        return TaskTimeoutError(limit, pid)
    return WorkerLostError(pid, *how, out_of_memory)


def ask_zygote(method: str, pid: int) -> tuple[int | None, int | None, str | None]:
    """How a worker of the zygote ended (its exit code, signal and a description): the
    zygote reaped it, so only it knows. Nothing for workers started otherwise."""
    if method != "zygote":
        return None, None, None
    try:
        status = shared_zygote().exit_status(pid)
    except Exception:
        status = None
    if status is None:
        return None, None, None
    return describe_exit(status)


class OomKills:
    """The system's count of OOM kills, to tell a worker the OOM killer ended."""

    def __init__(self) -> None:
        self._seen = oom_kills()

    def explain(self, signal: int | None) -> bool:
        """Whether a worker killed by ``signal`` was most likely killed by the OOM killer:
        SIGKILL, as the system's count rose."""
        if signal != 9:
            return False
        count = oom_kills()
        rose = None not in (count, self._seen) and count != self._seen
        self._seen = count
        return rose


def start_up_failure(
    initializer: Callable[..., object] | None, name: str, pid: int | None, how: str | None
) -> ShoalError:
    """The error of a pool that stopped starting workers: which died, how, what to do."""
    fix = (
        f"its initializer ({getattr(initializer, '__qualname__', repr(initializer))}) may "
        "be ending or crashing the process: call it in this process to see why"
        if initializer is not None
        else "something the worker imports at start may be ending or crashing the process"
    )
    return ShoalError(
        f"{GIVE_UP_AFTER} workers in a row died starting up, by their own hand (the last, "
        f"{name} (pid {pid}), {how or 'exited'}, before it was ready): the pool stopped "
        f"starting workers and fails what is left; {fix}"
    )
