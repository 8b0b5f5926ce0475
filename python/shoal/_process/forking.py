"""Forking the program's own process (the fork start method), as ``os.fork()`` does but
safer: the child cannot outlive the program, and a warning turned into an error never
leaves a child the program does not know of.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
import warnings
from typing import Final

from shoal._shoal import die_with_parent

__all__ = ["fork"]

_FORK_WARNING: Final = (
    "This process (pid={pid}) is multi-threaded, use of fork() may lead to deadlocks in the child."
)


def fork() -> int:
    """``os.fork()``, warning as it warns from Python 3.12 on when other threads run (the
    program's: shoal's own threads hold nothing a worker needs), but never from inside it:
    a warning raised as an error after the fork would leave the parent without the pid
    of a child that runs on. A child of the program itself dies with the forking thread
    when that thread is the main thread or shoal's own (which outlive the workers): it
    cannot outlive the program, even if it hangs before it could watch for the program's
    death itself. (A child's own children outlive it, as multiprocessing's do, and can
    see it die: ``parent_process().is_alive()``.)"""
    me = threading.current_thread()
    others = [t for t in threading.enumerate() if t is not me and not t.name.startswith("shoal-")]
    if others and sys.version_info >= (3, 12):
        # A filter that makes the warning an error drops it, as os.fork() does up to 3.14
        # (3.15 raises it from inside, after the child exists).
        with contextlib.suppress(DeprecationWarning):
            # (From shoal's frame, as os.fork's is from multiprocessing's: hidden by the
            # default filters, shown by -W default or error.)
            warnings.warn(_FORK_WARNING.format(pid=os.getpid()), DeprecationWarning, stacklevel=1)
    parent = os.getpid()
    lasting = me is threading.main_thread() or me.name.startswith("shoal-")
    lasting = lasting and multiprocessing.parent_process() is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0 and lasting and not die_with_parent(parent):  # pragma: no cover - the child
        os._exit(1)
    return pid
