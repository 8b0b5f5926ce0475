"""What a progress bar costs: tiny-task ``imap`` and ``map`` with and without one.

One interpreter, one pool of 2 workers (process backend), each case run ``--repeats``
times alternately after a warm-up; the best of each. The bar is a real ``tqdm`` drawing
to ``os.devnull`` (its rendering is part of the cost). Reported: items per second and
the share of the bar-less speed kept with the bar (the target is at least 95%). Nothing
here is asserted.

Usage::

    python benches/progress_bench.py
    python benches/progress_bench.py --repeats 9
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

import shoal

ITEMS = 200_000


def _inc(x: int) -> int:
    return x + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with shoal.Pool(2) as pool, open(os.devnull, "w") as devnull:

        def bar() -> tqdm[Any]:
            return tqdm(file=devnull)

        cases: dict[str, Callable[[], object]] = {
            "imap": lambda: sum(pool.imap(_inc, range(ITEMS))),
            "imap, bar": lambda: sum(pool.imap(_inc, range(ITEMS), progress=bar())),
            "map": lambda: pool.map(_inc, range(ITEMS)),
            "map, bar": lambda: pool.map(_inc, range(ITEMS), progress=bar()),
        }
        for run in cases.values():
            run()
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(args.repeats):
            for name, run in cases.items():
                t = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - t)
    print(f"{ITEMS:,} tiny tasks, 2 workers, best of {args.repeats}")
    print("| workload | without a bar | with a bar | speed kept |")
    print("| --- | --- | --- | --- |")
    for name in ("imap", "map"):
        plain, barred = best[name], best[f"{name}, bar"]
        print(
            f"| {name} | {ITEMS / plain / 1e6:.2f} M/s | {ITEMS / barred / 1e6:.2f} M/s "
            f"| {plain / barred:.1%} |"
        )


if __name__ == "__main__":
    main()
