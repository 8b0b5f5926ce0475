"""Checks and shapes of the arguments every :class:`shoal.Pool` call takes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from shoal.backends.base import CallKind

__all__ = ["check_buffersize", "check_callable", "check_timeout", "length_of", "single_call"]


def length_of(iterable: Iterable[Any]) -> int | None:
    """The input's length if it has one (``len()``), without reading it.

    >>> length_of(range(5)), length_of(iter([1, 2]))
    (5, None)
    """
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def single_call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[CallKind, Any]:
    """How one call travels: as ``fn(*args)`` when it has no keywords (nothing to pickle
    for them), else as ``fn(*args, **kwargs)``.

    >>> single_call((1, 2), {}), single_call((1,), {"sep": ","})
    ((<CallKind.STAR: 'star'>, (1, 2)), (<CallKind.APPLY: 'apply'>, ((1,), {'sep': ','})))
    """
    if kwargs:
        return CallKind.APPLY, (args, dict(kwargs))
    return CallKind.STAR, args


def check_callable(fn: object) -> None:
    """Raises ``TypeError`` as calling ``fn`` would, but before any task is made.

    >>> check_callable(len)
    >>> check_callable(3)
    Traceback (most recent call last):
    ...
    TypeError: 'int' object is not callable
    """
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__!r} object is not callable")


def check_timeout(seconds: float | None) -> float | None:
    """The one rule for ``task_timeout``: ``None`` or a positive number of seconds, where
    ``math.inf`` means no limit. Returns the limit (``None``: none); refuses the rest.

    >>> check_timeout(0.5), check_timeout(None), check_timeout(float("inf"))
    (0.5, None, None)
    >>> check_timeout(0)
    Traceback (most recent call last):
    ...
    ValueError: task_timeout must be a positive number of seconds (math.inf: no limit), not 0
    """
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(
            "task_timeout must be a positive number of seconds (math.inf: no limit), "
            f"not {seconds!r}"
        )
    return None if math.isinf(seconds) else float(seconds)


def check_buffersize(buffersize: int | None) -> None:
    """Refuses a ``buffersize`` (how many items a lazy map reads ahead of its reader) as
    Python 3.14's ``Executor.map`` refuses it.

    >>> check_buffersize(None); check_buffersize(4)
    >>> check_buffersize(0)
    Traceback (most recent call last):
    ...
    ValueError: buffersize must be None or > 0
    """
    if buffersize is None:
        return
    if isinstance(buffersize, bool) or not isinstance(buffersize, int):
        raise TypeError("buffersize must be an integer or None")
    if buffersize < 1:
        raise ValueError("buffersize must be None or > 0")
