"""How a chunk's function is called on each of its items: the one definition, used by
the Pool, every backend and the worker processes (a light module: workers import it).

A process worker receives the call as a small int, :attr:`CallKind.code`, with
:data:`WATCHED` added when a progress bar watches the chunk.

Example:
    >>> CallKind.STAR.code, BY_CODE[1]
    (1, <CallKind.STAR: 'star'>)
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["BY_CODE", "WATCHED", "CallKind"]


class CallKind(enum.Enum):
    """How a chunk's ``fn`` is called on each of its items. Each kind's ``value`` is its
    name, its ``code`` the small int that stands for it in a process worker's chunk."""

    ONE = "one", 0
    """``fn(item)``: ``map``, ``imap``, ``imap_unordered``."""
    STAR = "star", 1
    """``fn(*item)``: ``starmap``."""
    APPLY = "apply", 2
    """``fn(*args, **kwargs)`` with ``item == (args, kwargs)``: ``apply`` and ``submit``."""

    code: int

    def __new__(cls, value: str, code: int) -> CallKind:
        kind = object.__new__(cls)
        kind._value_ = value
        # A plain attribute: the process backend reads it for every chunk it sends.
        kind.code = code
        return kind


WATCHED: Final = 4
"""Added to a call's code for a chunk a progress bar watches: the worker reports how far
it has got while the chunk runs."""

BY_CODE: Final = {kind.code: kind for kind in CallKind}
"""Each kind by its code (without :data:`WATCHED`)."""
