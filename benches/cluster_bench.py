"""shoal.Pool on a cluster engine against that engine used directly, on the same cluster
in one run: Ray tasks (``ray.get([f.remote(x) for x in xs])``) and Dask futures
(``client.gather(client.map(f, xs))``), the way their own docs write a parallel map.

Run: ``python benches/cluster_bench.py`` (``make bench-cluster``). Prints seconds per
workload and the ratio engine-direct / shoal (above 1: shoal is faster).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

import shoal


def inc(x: int) -> int:
    return x + 1


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def _best(runs: int, work: Callable[[], Any], expected: Any) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        assert work() == expected
        best = min(best, time.perf_counter() - started)
    return best


def _workloads(tiny: int, heavy: int) -> dict[str, tuple[Callable[[int], int], list[int]]]:
    return {
        f"{tiny} tiny tasks": (inc, list(range(tiny))),
        f"{heavy} x 30 ms": (spin, [300_000] * heavy),
    }


def bench_ray(runs: int, tiny: int, heavy: int) -> list[tuple[str, float, float]]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    rows = []
    try:
        with shoal.Pool(backend="ray") as pool:
            for name, (fn, items) in _workloads(tiny, heavy).items():
                expected = [fn(x) for x in items]
                remote = ray.remote(fn)
                pool.map(fn, items[:10])
                ray.get([remote.remote(x) for x in items[:10]])
                ours = _best(runs, lambda: pool.map(fn, items), expected)  # noqa: B023
                theirs = _best(runs, lambda: ray.get([remote.remote(x) for x in items]), expected)  # noqa: B023
                rows.append((f"ray: {name}", ours, theirs))
    finally:
        ray.shutdown()
    return rows


def bench_dask(runs: int, tiny: int, heavy: int) -> list[tuple[str, float, float]]:
    distributed: Any = importlib.import_module("distributed")

    rows = []
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        distributed.Client(cluster) as client,
        shoal.Pool(backend="dask", client=client) as pool,
    ):
        for name, (fn, items) in _workloads(tiny, heavy).items():
            expected = [fn(x) for x in items]
            pool.map(fn, items[:10])
            ours = _best(runs, lambda: pool.map(fn, items), expected)  # noqa: B023
            theirs = _best(
                runs,
                lambda: client.gather(client.map(fn, items, pure=False)),  # noqa: B023
                expected,
            )
            rows.append((f"dask: {name}", ours, theirs))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tiny", type=int, default=10_000)
    parser.add_argument("--heavy", type=int, default=40)
    args = parser.parse_args()
    rows = bench_ray(args.runs, args.tiny, args.heavy) + bench_dask(
        args.runs, args.tiny, args.heavy
    )
    print(f"{'workload':34} {'shoal s':>9} {'direct s':>9} {'direct / shoal':>15}")
    for name, ours, theirs in rows:
        print(f"{name:34} {ours:9.3f} {theirs:9.3f} {theirs / ours:15.2f}")


if __name__ == "__main__":
    main()
