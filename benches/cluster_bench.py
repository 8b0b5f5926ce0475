"""shoal.Pool on a cluster engine against that engine used directly, on the same local
cluster (two single-CPU workers), in one run:

* Ray: ``shoal.Pool(backend="ray")`` against ``ray.util.multiprocessing.Pool`` and plain
  Ray tasks (``ray.get([f.remote(x) for x in xs])``);
* Dask: ``shoal.Pool(backend="dask", client=...)`` against ``Client.map`` and
  ``Client.submit``, the way their docs write a parallel map.

Workloads: 20,000 tiny tasks (x + 1; ``imap`` at default settings for the pools), 200 x
20 ms CPU tasks, 64 tasks each returning a 16 MiB array, one ``apply`` round trip, and a
pool's start (with one task) on the running cluster. Each figure is the best of
``--runs``; the table gives seconds and native / shoal (above 1: shoal is faster).

Run: ``python benches/cluster_bench.py`` (``make bench-cluster``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import shoal


def inc(x: int) -> int:
    return x + 1


def busy(seconds: float) -> float:
    """Keeps one CPU busy for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def big(i: int) -> Any:
    return np.full(2 * 1024 * 1024, i, dtype=np.int64)  # 16 MiB


Way = Callable[[Callable[..., Any], list[Any]], Any]


def _best(runs: int, work: Callable[[], Any], check: Callable[[Any], bool]) -> float:
    """The best time of ``runs``; NaN if a run failed (the cell then says so)."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        try:
            outcome = work()
        except Exception as exc:
            print(f"  (a run failed: {type(exc).__name__}: {exc})", flush=True)
            return float("nan")
        best = min(best, time.perf_counter() - started)
        assert check(outcome)
        del outcome
    return best


def _compare(
    runs: int, engine: str, ways: dict[str, Way], starts: dict[str, Callable[[], Any]]
) -> list[list[str]]:
    tiny = list(range(20_000))
    workloads: list[tuple[str, Callable[..., Any], list[Any], Callable[[Any], bool]]] = [
        ("20,000 tiny tasks", inc, tiny, lambda out: list(out) == [x + 1 for x in tiny]),
        ("200 x 20 ms CPU", busy, [0.02] * 200, lambda out: len(list(out)) == 200),
        ("64 x 16 MiB results", big, list(range(64)), lambda out: int(list(out)[63][0]) == 63),
        ("apply round trip", inc, [1], lambda out: list(out) == [2]),
    ]
    rows = []
    for label, fn, items, check in workloads:
        for way in ways.values():
            way(fn, items[:4])  # warm: workers started, functions shipped
        times = {name: _best(runs, _bound(way, fn, items), check) for name, way in ways.items()}
        rows.append(_row(engine, label, times))
        print(" | ".join(rows[-1]), flush=True)
    times = {name: _best(runs, start, lambda _: True) for name, start in starts.items()}
    rows.append(_row(engine, "pool start + 1 task", times))
    print(" | ".join(rows[-1]), flush=True)
    return rows


def _bound(way: Way, fn: Callable[..., Any], items: list[Any]) -> Callable[[], Any]:
    return lambda: way(fn, items)


def _row(engine: str, label: str, times: dict[str, float]) -> list[str]:
    ours, *natives = times.items()
    cells = [f"{engine}: {label}", f"{ours[1]:.3f}"]
    for name, seconds in natives:
        cells.append(f"{name} {seconds:.3f} ({seconds / ours[1]:.2f}x)")
    return cells


def bench_ray(runs: int) -> list[list[str]]:
    import ray

    RayPool: Any = importlib.import_module("ray.util.multiprocessing").Pool

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        with shoal.Pool(backend="ray") as pool:
            native = RayPool(2)
            remote = {fn: ray.remote(fn) for fn in (inc, busy, big)}
            ways: dict[str, Way] = {
                "shoal": lambda fn, xs: list(pool.imap(fn, xs)),
                "ray Pool": lambda fn, xs: list(native.imap(fn, xs)),
                "ray tasks": lambda fn, xs: ray.get([remote[fn].remote(x) for x in xs]),
            }
            starts = {
                "shoal": lambda: _start_and_stop(shoal.Pool(backend="ray")),
                "ray Pool": lambda: _start_and_stop(RayPool(2)),
            }
            rows = _compare(runs, "ray", ways, starts)
            native.terminate()
    finally:
        ray.shutdown()
    return rows


def bench_dask(runs: int) -> list[list[str]]:
    distributed: Any = importlib.import_module("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR
    )
    client = distributed.Client(cluster)
    try:
        with shoal.Pool(backend="dask", client=client) as pool:
            ways: dict[str, Way] = {
                "shoal": lambda fn, xs: list(pool.imap(fn, xs)),
                "Client.map": lambda fn, xs: client.gather(client.map(fn, xs, pure=False)),
                "Client.submit": lambda fn, xs: client.gather(
                    [client.submit(fn, x, pure=False) for x in xs]
                ),
            }
            address = cluster.scheduler_address
            starts = {
                "shoal": lambda: _start_and_stop(shoal.Pool(backend="dask", address=address)),
                "Client": lambda: _connect_and_close(distributed, address),
            }
            return _compare(runs, "dask", ways, starts)
    finally:
        client.close()
        cluster.close()


def _start_and_stop(pool: Any) -> None:
    assert pool.apply(inc, (1,)) == 2
    pool.close()
    pool.join()


def _connect_and_close(distributed: Any, address: str) -> None:
    with distributed.Client(address) as client:
        assert client.submit(inc, 1).result() == 2


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    print("workload | shoal s | native s (native / shoal)", flush=True)
    bench_ray(args.runs)
    bench_dask(args.runs)


if __name__ == "__main__":
    main()
