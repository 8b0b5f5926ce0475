"""What ``Pool.stats()``'s tally costs: tiny tasks with it and without it.

Pools of 2 workers (process backend), one at a time, alternately made with
``SHOAL_STATS=0`` (no tally) and without; each workload run once per pool after a
warm-up, ``--repeats`` pools of each kind; the best of each. The workloads are where a
per-chunk cost shows most: ``apply_async`` of tiny tasks (one task per chunk, tens of
thousands a second), and ``imap``/``map`` of tiny tasks. Reported: tasks per second and
the share of the tally-less speed kept (the target is at least 98%). On a small shared
machine two pools of the same kind differ by more than that, so the bench also times
the Pool's result path itself (``PoolCore._handle`` fed chunk results) with and
without the tally, and gives the difference's share of each workload's time from the
chunks that workload answered. Nothing here is asserted.

Usage::

    python benches/stats_bench.py
    python benches/stats_bench.py --repeats 9
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import shoal
from shoal.backends.base import ChunkResult
from shoal.pool._jobs import SINGLE

ITEMS = 200_000
CALLS = 20_000


def _inc(x: int) -> int:
    return x + 1


def _workloads(pool: shoal.Pool) -> dict[str, tuple[int, Callable[[], object]]]:
    def calls() -> object:
        return [r.get() for r in [pool.apply_async(_inc, (i,)) for i in range(CALLS)]]

    return {
        "apply_async": (CALLS, calls),
        "imap": (ITEMS, lambda: sum(pool.imap(_inc, range(ITEMS)))),
        "map": (ITEMS, lambda: pool.map(_inc, range(ITEMS))),
    }


class _Dropped:
    """A result target that takes values and does nothing with them."""

    def _deliver(self, start: int, values: list[Any], failures: dict[int, Any]) -> None:
        pass


def result_path_seconds_per_chunk(tallied: bool, chunks: int = 20_000) -> float:
    """What the Pool's result path (``PoolCore._handle``) spends on one answered chunk
    of one task, with or without the tally (best of 7), fed chunk results directly."""
    os.environ["SHOAL_STATS"] = "1" if tallied else "0"
    results = [ChunkResult(i, [i], {}, 1e-6, i % 2) for i in range(chunks)]
    target = _Dropped()
    best = float("inf")
    with shoal.Pool(1, backend="thread") as pool:
        core = pool._core
        for _ in range(7):
            for i in range(chunks):
                core.in_flight[i] = (target, SINGLE, 0, 1)  # type: ignore[assignment]
            t = time.perf_counter()
            for result in results:
                core._handle(result)
            best = min(best, time.perf_counter() - t)
    return best / chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    best: dict[tuple[str, str], float] = {}
    counts: dict[str, int] = {}
    chunks: dict[str, int] = {}
    for repeat in range(args.repeats):
        for mode in ("without", "with") if repeat % 2 else ("with", "without"):
            # One pool at a time: a second pool's idle workers would perturb the first.
            os.environ["SHOAL_STATS"] = "0" if mode == "without" else "1"
            with shoal.Pool(2) as pool:
                workloads = _workloads(pool)
                for _, run in workloads.values():
                    run()  # warm-up: workers started, functions sent, chunk sizes found
                for name, (count, run) in workloads.items():
                    counts[name] = count
                    before = pool.stats().chunks_done
                    t = time.perf_counter()
                    run()
                    elapsed = time.perf_counter() - t
                    if mode == "with":
                        chunks[name] = pool.stats().chunks_done - before
                    best[mode, name] = min(best.get((mode, name), elapsed), elapsed)
                assert (pool.stats().tasks_done > 0) == (mode == "with")
    bare_path = result_path_seconds_per_chunk(tallied=False)
    per_chunk = result_path_seconds_per_chunk(tallied=True) - bare_path
    print(f"tiny tasks, 2 workers, best of {args.repeats}")
    print(
        f"the result path: {bare_path * 1e9:.0f} ns a chunk without the tally,"
        f" {per_chunk * 1e9:.0f} ns more with it"
    )
    print("| workload | chunks | without the tally | with it | speed kept | the tally's share |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, count in counts.items():
        plain, counted = best["without", name], best["with", name]
        share = per_chunk * chunks[name] / counted
        print(
            f"| {name} | {chunks[name]:,} | {count / plain / 1e3:,.0f} k/s "
            f"| {count / counted / 1e3:,.0f} k/s | {plain / counted:.1%} | {share:.2%} |"
        )


if __name__ == "__main__":
    main()
