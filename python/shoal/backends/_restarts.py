"""When a backend that owns its workers starts one in the place of one that died.

A worker killed from outside (the OOM killer, an operator, a chaos test) after it started
is replaced at once, however often it happens: a healthy pool never gives up because its
workers keep being killed. A worker that died while starting (before it said it was
ready: its initializer had not finished) is replaced after a pause that doubles with each
such death in a row, up to ``LONGEST_PAUSE``, so that a start-up that keeps failing does
not spin. The pool gives up only on evidence that start-up itself fails: ``GIVE_UP_AFTER``
workers in a row that died starting up by their own hand (an exit, or a signal the
process raises on itself: a crash or an abort), not killed.

Example:
    >>> restarts = Restarts()
    >>> restarts.pause_after(started=True, code=None, signal=9)
    0.0
    >>> [restarts.pause_after(started=False, code=1, signal=None) for _ in range(4)]
    [0.05, 0.1, 0.2, 0.4]
    >>> restarts.pause_after(started=False, code=1, signal=None) is None  # the fifth
    True
"""

from __future__ import annotations

import signal as signals
import threading
import traceback
from collections.abc import Callable
from typing import Final

__all__ = [
    "FIRST_PAUSE",
    "GIVE_UP_AFTER",
    "LONGEST_PAUSE",
    "Replacements",
    "Restarts",
    "by_its_own_hand",
    "oom_kills",
]

GIVE_UP_AFTER: Final = 5
"""Workers in a row that died starting up by their own hand before the pool gives up."""
FIRST_PAUSE: Final = 0.05
"""Seconds before a worker replaces one that died starting up; doubled each time."""
LONGEST_PAUSE: Final = 5.0
"""The longest pause before a replacement."""

# Signals a process raises on itself (a crash, an abort), as opposed to being killed.
_OWN_SIGNALS: Final = frozenset(
    {
        signals.SIGSEGV,
        signals.SIGABRT,
        signals.SIGBUS,
        signals.SIGFPE,
        signals.SIGILL,
        signals.SIGSYS,
        signals.SIGTRAP,
    }
)


def by_its_own_hand(code: int | None, signal: int | None) -> bool:
    """Whether a process that ended with exit ``code`` or ``signal`` ended itself: it
    exited, or crashed or aborted; not when it was killed, or how is not known.

    >>> by_its_own_hand(1, None), by_its_own_hand(None, 11), by_its_own_hand(None, 9)
    (True, True, False)
    """
    return code is not None or (signal is not None and signal in _OWN_SIGNALS)


class Restarts:
    """A pool's record of its workers' deaths while starting, and what to do next."""

    def __init__(self) -> None:
        self.dying_starting = 0  # workers in a row that died before they were ready
        self.failing = 0  # of which by their own hand

    def pause_after(self, *, started: bool, code: int | None, signal: int | None) -> float | None:
        """Seconds to wait before a worker replaces one that ended as said (``started``:
        it had said it was ready); ``None``: give up, start-up keeps failing."""
        if started:
            self.dying_starting = self.failing = 0
            return 0.0
        self.dying_starting += 1
        if by_its_own_hand(code, signal):
            self.failing += 1
            if self.failing >= GIVE_UP_AFTER:
                return None
        pause: float = FIRST_PAUSE * 2.0 ** (self.dying_starting - 1)
        return min(pause, LONGEST_PAUSE)


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has killed since boot (the
    ``oom_kill`` line of ``/proc/vmstat``, which counts a memory cgroup's kills too);
    ``None`` where the kernel does not say. A worker killed by ``SIGKILL`` while it rose
    was most likely one of them.

    >>> isinstance(oom_kills(), int | None)
    True
    """
    try:
        with open("/proc/vmstat") as vmstat:
            for line in vmstat:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class Replacements:
    """Starts workers in the place of those that ended, by the ``launch`` each call is
    given: at once, or after the pause :class:`Restarts` decides (on a timer thread);
    never once the pool is terminated (a closing pool still needs workers for the chunks
    it queued). It keeps no ``launch`` beyond a pending pause, so that a backend holding
    it is not part of a reference cycle."""

    def __init__(self) -> None:
        self._restarts = Restarts()
        self._lock = threading.Lock()  # the flags and the timer: events thread vs. caller
        self._stopping = False
        self._terminating = False
        self._pending: threading.Timer | None = None

    def stop(self, *, terminate: bool) -> None:
        """The pool is closing (``terminate``: terminated, which ends the replacing)."""
        with self._lock:
            self._stopping = True
            self._terminating = terminate
            if terminate and self._pending is not None:
                self._pending.cancel()

    def replace(
        self, launch: Callable[[], None], *, started: bool, code: int | None, signal: int | None
    ) -> bool:
        """Replaces, by ``launch``, a worker that ended with exit ``code`` or ``signal``
        (``started``: it had said it was ready). False: start-up keeps failing, nothing
        was started, and the pool should give up."""
        pause = self._restarts.pause_after(started=started, code=code, signal=signal)
        if pause is None:
            return False
        if not pause:
            self._relaunch(launch)
            return True
        # Died starting up: a pause, growing, before the next try.
        with self._lock:
            if not self._terminating:
                self._pending = threading.Timer(pause, self._relaunch, (launch,))
                self._pending.daemon = True
                self._pending.start()
        return True

    def _relaunch(self, launch: Callable[[], None]) -> None:
        with self._lock:
            stopping, terminating = self._stopping, self._terminating
        if terminating:
            return
        try:
            launch()
        except Exception:
            if not stopping:
                # The pool carries on with one worker fewer; the next exit tries again.
                traceback.print_exc()
