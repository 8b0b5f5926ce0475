"""What a worker tells about a chunk besides its results: a short description of its
arguments for ``Pool.stats()``'s slowest tasks, and how far it has got, for a bar.

A worker describes the first task of a chunk that ran for :data:`LABEL_AFTER` seconds or
more (``ChunkResult.label``): describing costs a few microseconds, nothing next to such a
chunk, and tiny tasks never pay it. Light on purpose: worker processes import it.
"""

from __future__ import annotations

import reprlib
from typing import Any, Final

__all__ = ["LABEL_AFTER", "PROGRESS_EVERY", "describe_arguments"]

LABEL_AFTER: Final = 0.001
"""Seconds a chunk must run before its worker describes its first task's arguments."""

PROGRESS_EVERY: Final = 0.2
"""Seconds between a worker's reports of how many tasks of a watched chunk are done (a
chunk that ends sooner sends none: its answer says it all)."""


_SHORT = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 40, 40
_SHORT.maxlist = _SHORT.maxtuple = 4
_SHORT.maxdict = 3
_LABEL_CHARS: Final = 80


def describe_arguments(item: Any, call: str) -> str:
    """A short repr of one task's arguments, as its call would read them: ``item`` as
    ``Chunk.items`` holds it, ``call`` a ``CallKind`` value.

    >>> describe_arguments(7, "one"), describe_arguments((2, 3), "star")
    ('7', '2, 3')
    >>> text = describe_arguments(((1,), {"key": "x" * 100}), "apply")
    >>> text[:10], len(text) < 60
    ("1, key='xx", True)
    """
    try:
        if call == "one":
            text = _SHORT.repr(item)
        elif call == "star":
            text = ", ".join(_SHORT.repr(a) for a in item)
        else:
            args, kwargs = item
            parts = [_SHORT.repr(a) for a in args]
            parts += [f"{k}={_SHORT.repr(v)}" for k, v in kwargs.items()]
            text = ", ".join(parts)
    except Exception as exc:  # a repr that raises must not fail the task
        text = f"<arguments whose repr raised {type(exc).__name__}>"
    if len(text) > _LABEL_CHARS:
        text = text[: _LABEL_CHARS - 3] + "..."
    return text
