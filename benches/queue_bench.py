"""Throughput of ``shoal.Queue`` beside its peers, in one run.

Peers: ``shoal.Queue``, ``multiprocessing.Queue``, ``multiprocessing.SimpleQueue`` and
``faster_fifo.Queue``. Scenarios: small messages (ints) one at a time and in batches of
100, and 1 MiB ``bytes`` messages one at a time; each with 1 producer / 1 consumer and with
2 producers / 2 consumers, every producer and consumer a separate process started with
``fork``.

A cell's figure is the total number of messages divided by the wall time from the first
``put`` to the last ``get`` (``time.perf_counter``, a clock shared by the processes). A
probe run, not counted, sizes a cell's first run to last about ``--seconds`` (1.2 s), and
each run sizes the next, with at least the scenario's own number of messages; the cell
runs ``--repeats`` times (3 by default) and keeps the best. Nothing here asserts on
timings: the script prints a table and the ratios ``shoal / peer``.

Usage::

    python benches/queue_bench.py               # full run, about 2 minutes
    python benches/queue_bench.py --quick       # smoke run: few messages, no probe, 1 repeat
    python benches/queue_bench.py --only shoal --only faster-fifo
    python benches/queue_bench.py --only small-batch-1x1

Measure a release build of the extension (see benches/README.md).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import multiprocessing
import os
import platform
import queue as stdlib_queue
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.context import ForkContext
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Barrier
from typing import Any, Protocol

import shoal

MiB = 1 << 20
BATCH = 100
FASTER_FIFO_MAX_SIZE_BYTES = 64 * MiB
CELL_TIMEOUT_S = 120.0
INT_SENTINEL = -1
BYTES_SENTINEL = b""


class SupportsPutGet(Protocol):
    """The part of the queues' API that every peer has."""

    def put(self, obj: Any, /) -> None: ...

    def get(self) -> Any: ...


# --- peers ------------------------------------------------------------------------------


def _faster_fifo_queue() -> Any:
    # Loaded by name: faster_fifo ships no type information, and it is an optional
    # ("bench" extra) dependency, so a type check must pass whether or not it is installed.
    faster_fifo: Any = importlib.import_module("faster_fifo")
    # Registers the reduction that lets the queue be pickled to spawned processes. This
    # script forks, but a user of faster-fifo would import it, so it is part of the setup.
    importlib.import_module("faster_fifo_reduction")
    return faster_fifo.Queue(max_size_bytes=FASTER_FIFO_MAX_SIZE_BYTES)


@dataclass(frozen=True)
class Peer:
    name: str
    make: Callable[[ForkContext], SupportsPutGet]
    # Binds ``get_many`` for a batch of BATCH messages; None when the queue has no batching.
    get_many: Callable[[Any], Callable[[], list[Any]]] | None

    def available(self) -> str | None:
        """None when the peer can run here, otherwise why not."""
        if self.name == "faster-fifo":
            try:
                importlib.import_module("faster_fifo")
            except ImportError:
                return "not installed"
        return None


def _shoal_get_many(q: Any) -> Callable[[], list[Any]]:
    result: Callable[[], list[Any]] = functools.partial(q.get_many, BATCH)
    return result


def _faster_fifo_get_many(q: Any) -> Callable[[], list[Any]]:
    result: Callable[[], list[Any]] = functools.partial(q.get_many, max_messages_to_get=BATCH)
    return result


PEERS: list[Peer] = [
    Peer("shoal", lambda ctx: shoal.Queue(), _shoal_get_many),  # default capacity
    Peer("mp.Queue", lambda ctx: ctx.Queue(), None),
    Peer("mp.SimpleQueue", lambda ctx: ctx.SimpleQueue(), None),
    Peer("faster-fifo", lambda ctx: _faster_fifo_queue(), _faster_fifo_get_many),
]


# --- scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    slug: str
    label: str
    large: bool  # 1 MiB bytes messages, otherwise small ints
    batch: int  # 1: put/get; BATCH: put_many/get_many
    pairs: int  # producers, and as many consumers
    messages: int  # in all, across producers


def scenarios(quick: bool) -> list[Scenario]:
    """The scenarios, each with its least number of messages per run."""
    small, batched, large = (20_000, 50_000, 200) if quick else (200_000, 500_000, 2_000)
    result = []
    for pairs in (1, 2):
        pc = f"{pairs}P/{pairs}C"
        x = f"{pairs}x{pairs}"
        result += [
            Scenario(f"small-{x}", f"int, put/get, {pc}", False, 1, pairs, small),
            Scenario(f"small-batch-{x}", f"int, batch {BATCH}, {pc}", False, BATCH, pairs, batched),
            Scenario(f"1mib-{x}", f"1 MiB bytes, put/get, {pc}", True, 1, pairs, large),
        ]
    return sorted(result, key=lambda s: (s.large, s.batch, s.pairs))


def run_length(sc: Scenario, messages: float) -> int:
    """``messages`` rounded to whole batches for every producer, within 1x and 20x of the
    scenario's own count."""
    step = sc.batch * sc.pairs
    n = min(max(int(messages), sc.messages), 20 * sc.messages)
    return max(n // step, 1) * step


# --- the processes ----------------------------------------------------------------------


def _reporting_errors(role: str, results: MpQueue[Any], body: Callable[[], None]) -> None:
    """Runs a child's work; an exception is sent to the parent (and the child exits 1)."""
    try:
        body()
    except Exception as e:
        results.put(("error", f"{role} raised {type(e).__module__}.{type(e).__name__}", 0))
        results.close()
        results.join_thread()
        sys.exit(1)


def _producer(
    q: Any, sc: Scenario, count: int, first: int, barrier: Barrier, results: MpQueue[Any]
) -> None:
    _reporting_errors(
        "a producer", results, lambda: _produce(q, sc, count, first, barrier, results)
    )


def _consumer(
    q: Any,
    sc: Scenario,
    get_many: Callable[[Any], Callable[[], list[Any]]] | None,
    barrier: Barrier,
    results: MpQueue[Any],
) -> None:
    _reporting_errors("a consumer", results, lambda: _consume(q, sc, get_many, barrier, results))


def _produce(
    q: Any, sc: Scenario, count: int, first: int, barrier: Barrier, results: MpQueue[Any]
) -> None:
    sentinel: object = BYTES_SENTINEL if sc.large else INT_SENTINEL
    put = q.put
    if sc.large:
        blob = os.urandom(MiB)
        barrier.wait()
        start = time.perf_counter()
        for _ in range(count):
            put(blob)
    elif sc.batch == 1:
        barrier.wait()
        start = time.perf_counter()
        for i in range(first, first + count):
            put(i)
    else:
        put_many = q.put_many
        stop = first + count
        batches = [list(range(i, min(i + sc.batch, stop))) for i in range(first, stop, sc.batch)]
        barrier.wait()
        start = time.perf_counter()
        for b in batches:
            put_many(b)
    put(sentinel)
    results.put(("producer", start, count))


def _consume(
    q: Any,
    sc: Scenario,
    get_many: Callable[[Any], Callable[[], list[Any]]] | None,
    barrier: Barrier,
    results: MpQueue[Any],
) -> None:
    # Each producer ends with one sentinel, and each consumer stops at one. A batch that
    # holds more than one sentinel hands the extras back for the other consumers.
    sentinel: object = BYTES_SENTINEL if sc.large else INT_SENTINEL
    received = 0
    get = q.get
    if sc.batch == 1:
        barrier.wait()
        while True:
            # `x` keeps the last message alive until the next get returns, as a loop
            # `x = q.get(); use(x)` does. (For shoal's 1 MiB messages this matters: see
            # benches/README.md.)
            x = get()
            if x == sentinel:
                break
            received += 1
    else:
        take = get_many(q) if get_many is not None else q.get_many
        barrier.wait()
        while True:
            xs = take()
            if sentinel in xs:
                seen = xs.count(sentinel)
                received += len(xs) - seen
                for _ in range(seen - 1):
                    q.put(sentinel)
                break
            received += len(xs)
    end = time.perf_counter()
    results.put(("consumer", end, received))


def run_cell(ctx: ForkContext, peer: Peer, sc: Scenario) -> float | str:
    """Messages per second for one run of one cell, or why there is no figure."""
    q = peer.make(ctx)
    results: MpQueue[Any] = ctx.Queue()
    barrier = ctx.Barrier(2 * sc.pairs)
    share, rest = divmod(sc.messages, sc.pairs)
    procs = []
    first = 0
    for i in range(sc.pairs):
        count = share + (1 if i < rest else 0)
        procs.append(ctx.Process(target=_producer, args=(q, sc, count, first, barrier, results)))
        first += count
    for _ in range(sc.pairs):
        procs.append(ctx.Process(target=_consumer, args=(q, sc, peer.get_many, barrier, results)))
    for p in procs:
        p.start()
    starts: list[float] = []
    ends: list[float] = []
    received = 0
    outcome: float | str | None = None
    deadline = time.monotonic() + CELL_TIMEOUT_S
    while outcome is None and len(starts) + len(ends) < len(procs):
        try:
            kind, t, n = results.get(timeout=0.5)
        except stdlib_queue.Empty:
            if time.monotonic() > deadline:
                outcome = f"timeout ({CELL_TIMEOUT_S:.0f} s)"
            elif any(p.exitcode not in (None, 0) for p in procs) and results.empty():
                outcome = "a process died"
            continue
        if kind == "producer":
            starts.append(t)
        elif kind == "consumer":
            ends.append(t)
            received += n
        else:
            outcome = t  # an error message
    if outcome is None:
        outcome = (
            sc.messages / (max(ends) - min(starts))
            if received == sc.messages
            else f"lost {sc.messages - received} messages"
        )
    for p in procs:
        p.join(timeout=10 if isinstance(outcome, float) else 0.1)
        if p.is_alive():
            p.kill()
            p.join()
    if isinstance(outcome, float) and any(p.exitcode != 0 for p in procs):
        outcome = "a process failed"
    results.close()
    results.join_thread()
    return outcome


# --- reporting --------------------------------------------------------------------------


def fmt_rate(value: float | str, sc: Scenario) -> str:
    if isinstance(value, str):
        return value
    if sc.large:
        return f"{value:,.0f}/s {value * MiB / 1e9:.2f} GB/s"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M/s"
    return f"{value / 1e3:.0f}k/s"


def ratio(a: float | str | None, b: float | str | None) -> float | None:
    if isinstance(a, float) and isinstance(b, float) and b > 0:
        return a / b
    return None


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def print_table(
    rows: Sequence[Scenario],
    peers: Sequence[Peer],
    cells: dict[tuple[str, str], float | str],
    flagged: set[tuple[str, str]],
) -> None:
    names = [p.name for p in peers]
    others = [n for n in names if n != "shoal"] if "shoal" in names else []
    header = ["scenario", *names, *[f"shoal÷{n}" for n in others]]
    table = [header]
    for sc in rows:
        line = [sc.label]
        line += [
            fmt_rate(cells[sc.slug, n], sc) + (" *" if (sc.slug, n) in flagged else "")
            for n in names
        ]
        line += [fmt_ratio(ratio(cells[sc.slug, "shoal"], cells[sc.slug, n])) for n in others]
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


# (scenario kind, peer, the least shoal / peer) the team aims for.
TARGETS: list[tuple[Callable[[Scenario], bool], str, float]] = [
    (lambda s: not s.large and s.batch == 1, "mp.Queue", 2.0),
    (lambda s: not s.large and s.batch == 1, "faster-fifo", 2.0),
    (lambda s: not s.large and s.batch > 1, "faster-fifo", 3.0),
    (lambda s: s.large, "faster-fifo", 1.0),
    (lambda s: s.large, "mp.Queue", 8.0),
]


def print_targets(rows: Sequence[Scenario], cells: dict[tuple[str, str], float | str]) -> None:
    lines = []
    for sc in rows:
        for applies, peer, least in TARGETS:
            if not applies(sc) or (sc.slug, "shoal") not in cells or (sc.slug, peer) not in cells:
                continue
            r = ratio(cells[sc.slug, "shoal"], cells[sc.slug, peer])
            verdict = "no figure" if r is None else ("met" if r >= least else "missed")
            lines.append(
                f"  {sc.label:<28} shoal÷{peer:<12} >= {least:.0f}x: {fmt_ratio(r):>7}  {verdict}"
            )
    if lines:
        print("\nTargets (informational, not checked):")
        print("\n".join(lines))


# --- main -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:  # noqa: C901 (a branch per case)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: few messages, no probe, 1 repeat"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this peer (shoal, mp.Queue, mp.SimpleQueue, faster-fifo) or scenario "
        "(small-1x1, small-batch-2x2, 1mib-1x1, ...); may be given more than once",
    )
    parser.add_argument("--repeats", type=int, help="runs per cell, the best kept (default 3)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.2,
        help="the length a run is sized to from a probe run (default 1.2; not with --quick)",
    )
    args = parser.parse_args(argv)

    all_scenarios = scenarios(args.quick)
    peer_names = {p.name for p in PEERS}
    slugs = {s.slug for s in all_scenarios}
    only: list[str] = args.only or []
    unknown = [n for n in only if n not in peer_names | slugs]
    if unknown:
        parser.error(f"unknown --only {unknown}; choose from {sorted(peer_names | slugs)}")
    peers = [p for p in PEERS if p.name in only] or list(PEERS)
    rows = [s for s in all_scenarios if s.slug in only] or all_scenarios
    repeats: int = args.repeats or (1 if args.quick else 3)

    ctx = multiprocessing.get_context("fork")
    print(
        f"shoal {shoal.__version__} ({shoal.__file__}), Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start"
    )
    print(
        f"Children started with 'fork'; each cell is the best of {repeats} run(s); "
        "figure = messages / wall time from the first put to the last get."
    )
    least = ", ".join(f"{s.slug} {s.messages:,}" for s in rows)
    if args.quick:
        print(
            f"Messages per run: {least}. GB/s = 10^9 bytes/s. --quick is a smoke run: its "
            "figures (1 MiB above all: a fresh ring's first touches) are not the measurement."
        )
    else:
        print(
            f"Messages per run: sized by a probe run (not counted) to last about "
            f"{args.seconds:g} s (each later run by the one before), at least {least}; "
            "the best runs' counts are under the table. "
            "GB/s = 10^9 bytes/s."
        )
    print(
        f"faster-fifo max_size_bytes={FASTER_FIFO_MAX_SIZE_BYTES // MiB} MiB; shoal default "
        "capacity. xP/yC: x producer and y consumer processes.\n"
    )

    cells: dict[tuple[str, str], float | str] = {}
    counts: dict[tuple[str, str], int] = {}
    failures: list[tuple[tuple[str, str], str]] = []
    for sc in rows:
        plans: dict[str, Scenario] = {}
        for peer in peers:
            key = (sc.slug, peer.name)
            why_not = peer.available()
            if why_not is not None or (sc.batch > 1 and peer.get_many is None):
                cells[key] = why_not or "n/a"
                continue
            plans[peer.name] = sc
            if not args.quick:
                # A probe run (not counted) sizes the measured runs to about --seconds.
                probe = run_cell(ctx, peer, replace(sc, messages=sc.messages // 10))
                if isinstance(probe, str):
                    cells[key] = probe
                    failures.append((key, f"probe run: {probe}"))
                    del plans[peer.name]
                    continue
                plans[peer.name] = replace(sc, messages=run_length(sc, probe * args.seconds))
        for rep in range(repeats):
            for peer in peers:
                if peer.name not in plans:
                    continue
                key = (sc.slug, peer.name)
                value = run_cell(ctx, peer, plans[peer.name])
                best = cells.get(key)
                if isinstance(value, str):
                    cells.setdefault(key, value)
                    failures.append((key, f"run {rep + 1}/{repeats}: {value}"))
                else:
                    if not isinstance(best, float) or value > best:
                        cells[key] = value
                        counts[key] = plans[peer.name].messages
                    if not args.quick:  # the next run sized on this one's rate
                        plans[peer.name] = replace(
                            sc, messages=run_length(sc, value * args.seconds)
                        )
                print(
                    f"  {sc.slug:<16} {peer.name:<15} run {rep + 1}/{repeats}: "
                    f"{fmt_rate(value, sc)}",
                    file=sys.stderr,
                    flush=True,
                )
    print()
    print_table(rows, peers, cells, {key for key, _ in failures})
    if failures:
        print("\n* Runs that failed, left out of the best:")
        for (slug, name), why in failures:
            print(f"  {slug} {name} {why}")
    if not args.quick and counts:
        print("\nMessages in the best run:")
        for sc in rows:
            used = [
                f"{n} {counts[sc.slug, n]:,}"
                for n in (p.name for p in peers)
                if (sc.slug, n) in counts
            ]
            print(f"  {sc.slug}: {', '.join(used)}")
    print_targets(rows, cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
