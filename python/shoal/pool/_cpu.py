"""How many CPUs this process may use."""

from __future__ import annotations

import os

__all__ = ["cpu_count"]


def cpu_count() -> int:
    """The number of CPUs this process may run on: its affinity mask (``taskset``, cgroup
    cpusets) where the OS has one, else ``os.cpu_count()``; at least 1.

    Unlike ``multiprocessing.cpu_count``, which counts every CPU of the machine, this is
    what a pool can actually use, so it is the default number of workers.

    >>> cpu_count() >= 1
    True
    """
    process_cpu_count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if process_cpu_count is not None:
        count: int | None = process_cpu_count()
        return max(count or 1, 1)
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)
