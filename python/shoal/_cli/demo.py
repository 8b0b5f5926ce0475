"""The demo behind ``python -m shoal demo``: real work across processes, honest timings.

Its worker functions live in this importable module (not ``__main__``) so that
processes started by forkserver or spawn can find them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from typing import Any

import shoal


def _count_primes(lo: int, hi: int) -> int:
    count = 0
    for n in range(max(lo, 2), hi):
        if all(n % d for d in range(2, int(n**0.5) + 1)):
            count += 1
    return count


def _prime_worker(tasks: shoal.Queue[Any], results: shoal.Queue[Any]) -> None:
    while (task := tasks.get()) is not None:
        results.put((os.getpid(), _count_primes(*task)))


def _drain(source: Any, count: int) -> None:
    for _ in range(count):
        source.get()


def _feed(target: Any, count: int) -> None:
    for i in range(count):
        target.put(i)


def _throughput(make_queue: Callable[[], Any], count: int) -> float:
    """Messages per second from this process to a consumer process."""
    q = make_queue()
    consumer = mp.get_context("fork").Process(target=_drain, args=(q, count))
    consumer.start()
    start = time.perf_counter()
    _feed(q, count)
    consumer.join()
    return count / (time.perf_counter() - start)


def demo() -> None:
    """Counts primes on every core through shoal queues, then races queues."""
    workers = os.cpu_count() or 1
    chunks = [(lo, lo + 25_000) for lo in range(0, 400_000, 25_000)]
    print(f"shoal {shoal.__version__}: counting primes below 400,000 in {len(chunks)} chunks")

    start = time.perf_counter()
    expected = sum(_count_primes(lo, hi) for lo, hi in chunks)
    alone = time.perf_counter() - start
    print(f"  one process:       {expected} primes in {alone:.2f} s")

    tasks: shoal.Queue[Any] = shoal.Queue()
    results: shoal.Queue[Any] = shoal.Queue()
    ctx = mp.get_context("forkserver")
    start = time.perf_counter()
    procs = [ctx.Process(target=_prime_worker, args=(tasks, results)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    tasks.put_many([*chunks, *([None] * workers)])
    answers = [results.get() for _ in chunks]
    for proc in procs:
        proc.join()
    spread = time.perf_counter() - start
    pids = {pid for pid, _ in answers}
    total = sum(count for _, count in answers)
    print(
        f"  {workers} processes:       {total} primes in {spread:.2f} s "
        f"(worker start included; {len(pids)} processes answered, speed-up {alone / spread:.1f}x)"
    )
    assert total == expected, "the processes disagree with the single process"

    count = 100_000
    ours = _throughput(shoal.Queue, count)
    theirs = _throughput(mp.Queue, count)
    print(f"  {count:,} small messages to another process, one put at a time:")
    print(f"    shoal.Queue           {ours:>10,.0f} msg/s")
    print(f"    multiprocessing.Queue {theirs:>10,.0f} msg/s  (shoal: {ours / theirs:.1f}x)")


def main(argv: list[str] | None = None) -> None:
    """The command line: ``python -m shoal demo`` or ``python -m shoal info [--json]``."""
    parser = argparse.ArgumentParser(prog="python -m shoal")
    parser.add_argument(
        "command",
        choices=["demo", "info"],
        help="demo: real work across processes; info: facts for a bug report",
    )
    parser.add_argument("--json", action="store_true", help="info as JSON")
    args = parser.parse_args(argv)
    if args.command == "info":
        from shoal._cli.info import main as info

        info(as_json=args.json)
        return
    demo()
