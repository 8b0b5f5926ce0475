"""Uncontended acquire+release: shoal's Lock against multiprocessing's, ratio printed.

Run: python3 benches/sync_bench.py
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable

from shoal._sync import Lock

N = 200_000


def per_call(acquire: Callable[[], object], release: Callable[[], object]) -> float:
    """Seconds per acquire+release pair, best of three runs."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(N):
            acquire()
            release()
        best = min(best, (time.perf_counter() - start) / N)
    return best


def main() -> None:
    """Prints both timings and their ratio."""
    ours, theirs = Lock(), multiprocessing.Lock()
    a = per_call(ours.acquire, ours.release)
    b = per_call(theirs.acquire, theirs.release)
    print(
        f"acquire+release  shoal {a * 1e9:8.0f} ns  multiprocessing {b * 1e9:8.0f} ns  "
        f"ratio {a / b:5.2f}x"
    )


if __name__ == "__main__":
    main()
