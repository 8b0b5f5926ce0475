"""Process start and Manager round trips: shoal's against multiprocessing's fork, spawn and
forkserver, in one run, as ratios.

Rows: one ``Process`` from ``start()`` to its first message back through a ``Pipe``
(median of many, after a warm-up start: the zygote and the fork server are running),
the same for twenty at once (until all twenty answered), and one call through a
Manager ``dict`` proxy (median). shoal's Process is timed as a spawn-context one
(``shoal.get_context("spawn")``: forked from the zygote); multiprocessing's under each of
its start methods. Each start method runs in a fresh interpreter.

Run: python3 benches/process_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

# (label, module, start method)
SETUPS = [
    ("shoal", "shoal", "spawn"),
    ("mp fork", "multiprocessing", "fork"),
    ("mp spawn", "multiprocessing", "spawn"),
    ("mp forkserver", "multiprocessing", "forkserver"),
]


def _answer(conn: Any) -> None:
    conn.send("up")
    conn.close()


def _time_starts(ctx: Any, count: int, runs: int) -> float:
    """Median seconds from starting ``count`` processes to the last first message."""
    times = []
    for _ in range(runs):
        pipes = [ctx.Pipe(duplex=False) for _ in range(count)]
        started = time.perf_counter()
        children = [ctx.Process(target=_answer, args=(w,)) for _, w in pipes]
        for child in children:
            child.start()
        for r, _ in pipes:
            r.recv()
        times.append(time.perf_counter() - started)
        for child in children:
            child.join()
        for r, w in pipes:
            r.close()
            w.close()
    return statistics.median(times)


def _time_proxy(manager: Any, calls: int) -> float:
    shared = manager.dict()
    times = []
    for i in range(calls):
        started = time.perf_counter()
        shared[i % 8] = i
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(module: str, method: str, runs: int) -> dict[str, float]:
    """This interpreter's figures for ``module``'s objects under ``method``."""
    mp: Any = __import__(module)
    ctx = mp.get_context(method)
    _time_starts(ctx, 1, 1)  # warm-up: the zygote or the fork server is running after it
    one = _time_starts(ctx, 1, runs)
    twenty = _time_starts(ctx, 20, max(runs // 10, 3))
    with ctx.Manager() as manager:
        proxy = _time_proxy(manager, runs * 10)
    return {"one": one, "twenty": twenty, "proxy": proxy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="starts timed per row")
    parser.add_argument("--one", nargs=2, metavar=("MODULE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        module, method = args.one
        print(json.dumps(measure(module, method, args.runs)))
        return
    figures = {}
    for label, module, method in SETUPS:
        done = subprocess.run(
            [sys.executable, __file__, "--runs", str(args.runs), "--one", module, method],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        figures[label] = json.loads(done.stdout)
    rows = [
        ("Process start to first message, 1", "one", 1e3, "ms"),
        ("Process start to first message, 20 at once", "twenty", 1e3, "ms"),
        ("Manager dict proxy call", "proxy", 1e6, "us"),
    ]
    peers = [label for label, _, _ in SETUPS[1:]]
    print(f"{'':46} {'shoal':>10} " + " ".join(f"{'÷ ' + p:>17}" for p in peers))
    for title, key, scale, unit in rows:
        ours = figures["shoal"][key]
        ratios = " ".join(f"{ours / figures[p][key]:>16.2f}x" for p in peers)
        print(f"{title:46} {ours * scale:>7.2f} {unit} {ratios}")
    print("\n(x below 1: shoal takes less time than that peer)")


if __name__ == "__main__":
    main()
