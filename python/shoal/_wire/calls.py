"""How a chunk's function is called on each of its items: the one definition, used by
the Pool, every backend and the worker processes (a light module: workers import it)."""

from __future__ import annotations

import enum

__all__ = ["CallKind"]


class CallKind(enum.Enum):
    """How a chunk's ``fn`` is called on each of its items."""

    ONE = "one"
    """``fn(item)``: ``map``, ``imap``, ``imap_unordered``."""
    STAR = "star"
    """``fn(*item)``: ``starmap``."""
    APPLY = "apply"
    """``fn(*args, **kwargs)`` with ``item == (args, kwargs)``: ``apply`` and ``submit``."""
