"""The process backend's own options (``Pool``'s keyword arguments), checked in
``Pool()`` before anything starts.

- ``start_method``: ``"zygote"`` (default: forked by shoal's zygote, a fresh interpreter
  that was never given any threads), ``"spawn"`` (a new interpreter per worker, slower
  to start) or ``"fork"`` (a copy of this process, with everything it has loaded; unsafe
  if other threads hold locks, as with multiprocessing).
- ``arena_bytes``: the most shared memory the pool may hold for large buffers (numpy
  arrays and other protocol-5 buffers of 64 KiB or more in arguments and results). They
  cross with one copy into shared memory, and arrays arrive read-only, built over it
  (``array.copy()`` makes a private, writable one). Past the budget they are copied
  through the pool's rings, with a warning. ``None``: half of this machine's memory; it
  is used only as buffers travel, and blocks held by results stay valid after the pool
  ends.
- ``prefetch``: how many chunks a worker holds at once, the one it runs included;
  ``None`` (the default) adapts it to how long chunks take (2 while they are slow, up
  to 64 while they are tiny); ``1`` gives a worker its next chunk only once it has
  answered the last, so no task ever waits behind a slow one on a busy worker while
  another is free (a round trip per chunk).
- ``context``: a multiprocessing context (``multiprocessing.Pool``'s fifth argument,
  ``ProcessPoolExecutor``'s ``mp_context``): its ``fork`` forks the workers from this
  process, its ``spawn`` and ``forkserver`` use the zygote (unless ``start_method``
  says otherwise).
- ``max_memory_per_child``: bytes of resident memory past which a worker, after a
  chunk, leaves and is replaced (as Celery's ``worker_max_memory_per_child``, for tasks
  that leak).

Workers are named as multiprocessing names them for the context's method, or else for
the one the program set or this Python's default (``ForkPoolWorker-N``;
``ForkProcess-N`` for an executor).

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
