"""The tests' one way to wait for something that happens elsewhere (another thread, a
worker, a child process): poll it until it holds, and fail after a deadline naming what
never happened, rather than sleep for a while and hope it did.

Example:
    >>> import threading
    >>> done = threading.Event()
    >>> threading.Timer(0.01, done.set).start()
    >>> wait_for(done.is_set, "the timer to fire")
    True
    >>> wait_for(lambda: False, "pigs to fly", timeout=0.05)
    Traceback (most recent call last):
    ...
    TimeoutError: waited 0.05 s for pigs to fly; it never happened
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")

TIMEOUT = 30.0
"""How long a test waits by default: far beyond what any awaited event takes on a loaded
machine, far below the suite's per-test timeout (pyproject's ``timeout``), so that a wait
in vain fails with its own message rather than a stack dump."""


def wait_for(
    condition: Callable[[], T | None], what: str, timeout: float = TIMEOUT, interval: float = 0.005
) -> T:
    """Calls ``condition`` every ``interval`` seconds until it returns something true, and
    returns that; raises ``TimeoutError`` naming ``what`` (the event awaited, as in
    "waited 30 s for <what>") if it has not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}; it never happened")
        time.sleep(interval)
    return value
