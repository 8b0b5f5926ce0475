"""The process backend's own options, checked in ``Pool()`` before anything starts:
``prefetch``, ``max_memory_per_child``, and how workers start and are named
(``start_method``, ``context``).

Example:
    >>> start_methods("spawn", None)
    ('spawn', 'spawn')
    >>> check_prefetch(0)
    Traceback (most recent call last):
    ...
    ValueError: prefetch must be a positive int or None, not 0
"""

from __future__ import annotations

from typing import Any

from shoal._process.identity import program_start_method

__all__ = ["check_max_memory", "check_prefetch", "start_methods"]


def check_prefetch(prefetch: int | None) -> None:
    """Refuses a ``prefetch`` that is not ``None`` or a positive int."""
    if prefetch is not None and (
        isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1
    ):
        raise ValueError(f"prefetch must be a positive int or None, not {prefetch!r}")


def check_max_memory(max_memory_per_child: int | None) -> None:
    """Refuses a ``max_memory_per_child`` that is not ``None`` or a positive int."""
    if max_memory_per_child is not None and (
        isinstance(max_memory_per_child, bool)
        or not isinstance(max_memory_per_child, int)
        or max_memory_per_child <= 0
    ):
        raise ValueError(
            "max_memory_per_child must be a positive number of bytes or None, not "
            f"{max_memory_per_child!r}"
        )


def start_methods(start_method: str | None, context: Any) -> tuple[str | None, str]:
    """How the workers start (``start_method``, or what ``context`` asks for), and the
    multiprocessing start method they are named after."""
    if context is None:
        names = start_method if start_method in ("fork", "spawn") else program_start_method()
        return start_method, names
    getter = getattr(context, "get_start_method", None)
    if not callable(getter):
        raise TypeError(f"context must be a multiprocessing context, not {context!r}")
    method = str(getter())
    if start_method is None:
        from shoal._mp.context import pool_method_for

        start_method = pool_method_for(method)
    return start_method, method
