"""Uncontended locks: shoal's against multiprocessing's, ratios printed.

Rows: acquire+release of a ``Lock``, an ``RLock`` and a ``Semaphore``, a refused
``acquire(False)``, and the idiom ``with value.get_lock(): value.value += 1`` on a shared
``Value``.

Run: python3 benches/sync_bench.py
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import shoal

N = 200_000


def per_pair(lock: Any) -> float:
    """Seconds per acquire+release of ``lock``, best of three runs (the loop is written
    out here: a helper function per step would add its own call to both sides)."""
    acquire, release = lock.acquire, lock.release
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(N):
            acquire()
            release()
        best = min(best, (time.perf_counter() - start) / N)
    return best


def per_refusal(lock: Any) -> float:
    """Seconds per ``acquire(False)`` of ``lock`` while it is held, best of three runs."""
    lock.acquire()
    acquire = lock.acquire
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(N):
            acquire(False)
        best = min(best, (time.perf_counter() - start) / N)
    lock.release()
    return best


def per_increment(value: Any) -> float:
    """Seconds per locked increment of a shared ``Value``, best of three runs."""
    lock = value.get_lock()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(N):
            with lock:
                value.value += 1
        best = min(best, (time.perf_counter() - start) / N)
    return best


def main() -> None:
    """Prints each row's timings and their ratio."""
    rows = [
        ("Lock acquire+release", per_pair, shoal.Lock(), multiprocessing.Lock()),
        ("RLock acquire+release", per_pair, shoal.RLock(), multiprocessing.RLock()),
        ("Semaphore acquire+release", per_pair, shoal.Semaphore(), multiprocessing.Semaphore()),
        ("acquire(False) of a held Lock", per_refusal, shoal.Lock(), multiprocessing.Lock()),
        (
            "with get_lock(): value += 1",
            per_increment,
            shoal.Value("i", 0),
            multiprocessing.Value("i", 0),
        ),
    ]
    for name, measure, ours, theirs in rows:
        a, b = measure(ours), measure(theirs)
        print(
            f"{name:30} shoal {a * 1e9:6.0f} ns  multiprocessing {b * 1e9:6.0f} ns  "
            f"ratio {a / b:5.2f}x"
        )


if __name__ == "__main__":
    main()
