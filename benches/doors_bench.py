"""shoal behind the other doors, beside what users reach through them today, in one run.

Workloads (2 workers everywhere; every cell a fresh interpreter, after one identical
warm-up round that starts the pool; the best of ``--repeats``):

* ``submit``: 5,000 tiny ``submit`` then ``result``: ``shoal.Executor`` against
  ``concurrent.futures.ProcessPoolExecutor`` and loky's reusable executor.
* ``map``: ``Executor.map`` of 100,000 tiny tasks at defaults against
  ``ProcessPoolExecutor.map`` (whose default chunksize is 1: it maps 10,000, and the
  figure is per item).
* ``await``: 5,000 awaited calls gathered in one coroutine: ``await pool.apply_async``
  against ``loop.run_in_executor(ProcessPoolExecutor)`` and aiomultiprocess's
  ``Pool.apply`` (which takes coroutine functions).
* ``joblib``: ``Parallel`` of 5,000 tiny delayed calls on ``"shoal"`` against loky.
* ``sklearn``: ``cross_val_score`` of a random forest on 4,000 x 20 samples, 8 folds,
  ``n_jobs=2``, on ``"shoal"`` against loky.

Ratios are peer time over shoal's (above 1: shoal is faster). Nothing here is asserted.

Usage::

    python benches/doors_bench.py
    python benches/doors_bench.py --only await --repeats 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

SIZES = {"submit": 5_000, "map": 100_000, "map-ppe": 10_000, "await": 5_000, "joblib": 5_000}


def _inc(x: int) -> int:
    return x + 1


async def _ainc(x: int) -> int:
    return x + 1


def _submit(make: Callable[[], object]) -> Callable[[], float]:
    ex = make()
    for f in [ex.submit(_inc, n) for n in range(100)]:  # type: ignore[attr-defined]
        f.result()

    def run() -> float:
        t = time.perf_counter()
        futures = [ex.submit(_inc, n) for n in range(SIZES["submit"])]  # type: ignore[attr-defined]
        for f in futures:
            f.result()
        return time.perf_counter() - t

    return run


def cell(workload: str, peer: str) -> float:
    """Seconds for one run of ``workload`` on ``peer``, after a warm-up round."""
    import asyncio
    import concurrent.futures as cf

    if workload == "submit":
        makers: dict[str, Callable[[], object]] = {
            "shoal": lambda: __import__("shoal").Executor(2),
            "ppe": lambda: cf.ProcessPoolExecutor(2),
            "loky": lambda: __import__("loky").get_reusable_executor(2),
        }
        run = _submit(makers[peer])
        return run()
    if workload == "map":
        import shoal

        ex = shoal.Executor(2) if peer == "shoal" else cf.ProcessPoolExecutor(2)
        n = SIZES["map"] if peer == "shoal" else SIZES["map-ppe"]
        list(ex.map(_inc, range(100)))
        t = time.perf_counter()
        for _ in ex.map(_inc, range(n)):
            pass
        return (time.perf_counter() - t) * SIZES["map"] / n
    if workload == "await":
        if peer == "aiomultiprocess":
            import aiomultiprocess

            async def with_aio() -> float:
                async with aiomultiprocess.Pool(2) as pool:
                    await asyncio.gather(*(pool.apply(_ainc, (n,)) for n in range(100)))
                    t = time.perf_counter()
                    await asyncio.gather(*(pool.apply(_ainc, (n,)) for n in range(SIZES["await"])))
                    return time.perf_counter() - t

            return asyncio.run(with_aio())
        import shoal

        pool = shoal.Pool(2)
        ppe = cf.ProcessPoolExecutor(2)

        async def main() -> float:
            loop = asyncio.get_running_loop()

            def call(n: int) -> Awaitable[int]:
                if peer == "shoal":
                    return pool.apply_async(_inc, (n,))
                return loop.run_in_executor(ppe, _inc, n)

            await asyncio.gather(*(call(n) for n in range(100)))
            t = time.perf_counter()
            await asyncio.gather(*(call(n) for n in range(SIZES["await"])))
            return time.perf_counter() - t

        return asyncio.run(main())
    if workload in ("joblib", "sklearn"):
        import joblib

        if peer == "shoal":
            import shoal.joblib
        backend = "shoal" if peer == "shoal" else "loky"
        with joblib.parallel_config(backend=backend, n_jobs=2):
            job: Callable[[], object]
            if workload == "joblib":

                def job() -> object:
                    return joblib.Parallel()(
                        joblib.delayed(_inc)(n) for n in range(SIZES["joblib"])
                    )
            else:
                from sklearn.datasets import make_classification
                from sklearn.ensemble import RandomForestClassifier
                from sklearn.model_selection import cross_val_score

                x, y = make_classification(4_000, 20, random_state=0)
                forest = RandomForestClassifier(50, random_state=0)

                def job() -> object:
                    return cross_val_score(forest, x, y, cv=8, n_jobs=2)

            job()
            t = time.perf_counter()
            job()
            return time.perf_counter() - t
    raise ValueError(f"no cell {workload}/{peer}")


ROWS: list[tuple[str, str, list[str]]] = [
    ("submit", "5,000 tiny submit then result", ["shoal", "ppe", "loky"]),
    ("map", "Executor.map, 100,000 tiny tasks, defaults", ["shoal", "ppe"]),
    ("await", "5,000 awaited calls, gathered", ["shoal", "ppe", "aiomultiprocess"]),
    ("joblib", "joblib Parallel, 5,000 tiny delayed calls", ["shoal", "loky"]),
    ("sklearn", "cross_val_score, random forest, 8 folds", ["shoal", "loky"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", action="append", help="a workload: " + ", ".join(r[0] for r in ROWS)
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--_cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._cell:
        workload, peer = json.loads(args._cell)
        print(cell(workload, peer))
        return
    print(
        f"Python {sys.version.split()[0]}; 2 workers; best of {args.repeats}; peer time / shoal's"
    )
    table = [
        "| workload | shoal | "
        + " | ".join(f"÷ {p}" for p in ("ppe", "loky", "aiomultiprocess"))
        + " |"
    ]
    table.append("| --- | --- | --- | --- | --- |")
    for workload, label, peers in ROWS:
        if args.only and workload not in args.only:
            continue
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for peer in peers:
                done = subprocess.run(
                    [sys.executable, __file__, "--_cell", json.dumps([workload, peer])],
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
                if done.returncode != 0:
                    print(f"  {workload} {peer}: failed\n{done.stderr[-2000:]}", flush=True)
                    continue
                seconds = float(done.stdout.strip().splitlines()[-1])
                best[peer] = min(best.get(peer, seconds), seconds)
                print(f"  {workload:8} {peer:16} {seconds * 1e3:9.1f} ms", flush=True)
        shoal_time = best.get("shoal")
        cells = []
        for peer in ("ppe", "loky", "aiomultiprocess"):
            if peer in best and shoal_time:
                cells.append(f"{best[peer] / shoal_time:.2f}x")
            else:
                cells.append("")
        shown = f"{shoal_time * 1e3:.0f} ms" if shoal_time else "failed"
        table.append(f"| {label} | {shown} | " + " | ".join(cells) + " |")
    print("\n".join(table))


if __name__ == "__main__":
    main()
