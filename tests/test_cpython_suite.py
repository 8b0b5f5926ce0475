"""CPython's multiprocessing Pool and Queue tests, run against shoal (see ``cpython_suite``).

pytest collects the imported ``unittest.TestCase`` classes as they are.
"""

from __future__ import annotations

from cpython_suite import (
    WithProcessesTestPool,
    WithProcessesTestPoolWorkerErrors,
    WithProcessesTestPoolWorkerLifetime,
    WithProcessesTestQueue,
    WithSpawnTestQueue,
    WithThreadsTestPool,
)

__all__ = [
    "WithProcessesTestPool",
    "WithProcessesTestPoolWorkerErrors",
    "WithProcessesTestPoolWorkerLifetime",
    "WithProcessesTestQueue",
    "WithSpawnTestQueue",
    "WithThreadsTestPool",
]
