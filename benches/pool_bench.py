"""``shoal.Pool`` beside its peers, in one run.

Peers: ``shoal.Pool`` (its default backend unless ``--shoal-backend`` names one),
``multiprocessing.Pool`` started with ``fork`` and with ``spawn``,
``concurrent.futures.ProcessPoolExecutor``, joblib (``Parallel``/``delayed``, loky
backend, ``batch_size="auto"``), mpire (``WorkerPool``) and pebble (``ProcessPool``), each
with 2 workers and at its own defaults. A peer that is not installed is reported as such.

Workloads (``inc(x) = x + 1`` unless said otherwise; every function is defined at module
level here, so that every peer can pickle it):

* ``map``: ``pool.map(inc, range(1_000_000))`` at each peer's default chunking; items/s.
* ``imap``: ``list(pool.imap(inc, range(100_000)))`` at default settings (chunksize 1 in
  multiprocessing); joblib ``Parallel(n_jobs=2)(delayed(inc)(x) for x in ...)``; items/s.
* ``imap-chunked``: ``list(pool.imap(inc, range(1_000_000), chunksize=125_000))``: an
  explicit large chunk size (``map`` with it where the peer has no lazy map; joblib at its
  own batching); items/s.
* ``submit``: 20,000 ``apply_async(inc, (i,))`` (``submit``/``schedule`` where that is the
  API), then every result; tasks/s. shoal is measured with ``apply_async`` and ``submit``.
* ``latency``: 2,000 sequential ``apply(inc, (i,))`` (or ``submit(...).result()``) after
  100 not counted; the median round trip in microseconds. (joblib: 200, each a whole
  ``Parallel`` call.)
* ``cpu``: 200 tasks of a pure-Python loop calibrated to take about 20 ms here, mapped with
  chunksize 1; efficiency = 200 x (one task's time) / (2 x wall time), where one task's
  time is measured in the run's own interpreter before its pool starts and again after
  the map, and the faster of the two is used (a clock that speeds up under load would
  otherwise flatter the pool).
* ``startup``: from constructing the pool to the first ``apply(inc, (1,))`` result, and to
  the end of its ``with`` block; for the first pool of a fresh interpreter, and the median
  of 5 more pools in the same interpreter. Milliseconds.

Every run of a cell is a fresh interpreter (``python pool_bench.py --_cell ...``) started
by this script, so that peers do not share state and a hung run can be stopped. Except
for ``startup``, a run builds its pool and warms it up (a few short sleeps on every
worker) before the clock (``time.perf_counter``) starts. A run checks every result, so a
broken peer is reported rather than fast. Each cell runs ``--repeats`` times (3 by
default), interleaved across peers, and keeps the best. Peers whose default chunk size is
1 (``ProcessPoolExecutor.map``, pebble's ``map``, multiprocessing's ``imap``) get fewer
items, and their rate is per item as for the others. Nothing here asserts on timings: the
script prints a markdown table and the ratios shoal / peer (higher is better for shoal;
for times, peer time / shoal time).

Usage::

    python benches/pool_bench.py                # full run, a few minutes
    python benches/pool_bench.py --quick        # smoke run: small sizes, 1 repeat
    python benches/pool_bench.py --only shoal --only mp-fork
    python benches/pool_bench.py --only imap --only latency
    python benches/pool_bench.py --shoal-backend process --shoal-start-method spawn
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import shoal
import shoal.backends

PROCESSES = 2
CPU_TASK_S = 0.020
WARMUP_NAP_S = 0.02
WARMUP_LIMIT_S = 5.0
CELL_TIMEOUT_S = 180.0


# --- the work ---------------------------------------------------------------------------


def inc(x: int) -> int:
    return x + 1


def spin(n: int) -> int:
    """A pure-Python busy loop; returns ``n * (n - 1) // 2``."""
    total = 0
    for i in range(n):
        total += i
    return total


def nap(seconds: float) -> tuple[int, int]:
    """Sleeps, then says who ran it: (process id, thread id)."""
    time.sleep(seconds)
    return os.getpid(), threading.get_ident()


# --- peers ------------------------------------------------------------------------------


class PoolApi:
    """One peer's way of running each workload. ``pool`` is what ``open`` yields; peers
    are loaded by name (``importlib``), so a type check passes whether or not they are
    installed, and they are typed ``Any``."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def open(self, workload: str) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def map(self, pool: Any, items: range) -> list[Any]:
        """``inc`` over ``items`` at the peer's default chunking."""
        raise NotImplementedError

    def imap(self, pool: Any, items: range) -> list[Any]:
        """``inc`` over ``items``, lazily, at default settings."""
        raise NotImplementedError

    def imap_chunked(self, pool: Any, items: range, chunksize: int) -> list[Any]:
        """``inc`` over ``items``, lazily where the peer can, ``chunksize`` per chunk."""
        raise NotImplementedError

    def cpu_map(self, pool: Any, items: list[int]) -> list[Any]:
        """``spin`` over ``items``, one task per chunk."""
        raise NotImplementedError

    def submit_all(self, pool: Any, items: range) -> list[Any] | None:
        """Submits ``inc(x)`` for every item, then collects every result; None: no API."""
        raise NotImplementedError

    def submit_futures(self, pool: Any, items: range) -> list[Any] | None:
        """As ``submit_all`` through a second API of the peer; None when it has none."""
        return None

    def apply(self, pool: Any, fn: Callable[[Any], Any], x: Any) -> Any:
        """One blocking round trip: ``fn(x)`` on a worker."""
        raise NotImplementedError

    def warm_up(self, pool: Any) -> None:
        """Gets every worker started before the clock starts: short sleeps until each
        worker has run one (or a few seconds have passed)."""
        seen: set[tuple[int, int]] = set()
        deadline = time.perf_counter() + WARMUP_LIMIT_S
        while len(seen) < PROCESSES and time.perf_counter() < deadline:
            seen.update(
                tuple(r) for r in self.submit_all_of(pool, nap, [WARMUP_NAP_S] * (2 * PROCESSES))
            )

    def submit_all_of(self, pool: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return [self.apply(pool, fn, x) for x in items]


class ShoalApi(PoolApi):
    def open(self, workload: str) -> AbstractContextManager[Any]:
        pool: AbstractContextManager[Any] = shoal.Pool(PROCESSES, **self.options)
        return pool

    def map(self, pool: Any, items: range) -> list[Any]:
        return list(pool.map(inc, items))

    def imap(self, pool: Any, items: range) -> list[Any]:
        return list(pool.imap(inc, items))

    def imap_chunked(self, pool: Any, items: range, chunksize: int) -> list[Any]:
        return list(pool.imap(inc, items, chunksize=chunksize))

    def cpu_map(self, pool: Any, items: list[int]) -> list[Any]:
        return list(pool.map(spin, items, chunksize=1))

    def submit_all(self, pool: Any, items: range) -> list[Any] | None:
        results = [pool.apply_async(inc, (x,)) for x in items]
        return [r.get() for r in results]

    def submit_futures(self, pool: Any, items: range) -> list[Any] | None:
        futures = [pool.submit(inc, x) for x in items]
        return [f.result() for f in futures]

    def apply(self, pool: Any, fn: Callable[[Any], Any], x: Any) -> Any:
        return pool.apply(fn, (x,))

    def submit_all_of(self, pool: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        results = [pool.apply_async(fn, (x,)) for x in items]
        return [r.get() for r in results]


class MpApi(ShoalApi):
    def __init__(self, options: dict[str, Any], method: str) -> None:
        super().__init__(options)
        self.method = method

    def open(self, workload: str) -> AbstractContextManager[Any]:
        pool: AbstractContextManager[Any] = multiprocessing.get_context(self.method).Pool(PROCESSES)
        return pool

    def submit_futures(self, pool: Any, items: range) -> list[Any] | None:
        return None


class ExecutorApi(PoolApi):
    def open(self, workload: str) -> AbstractContextManager[Any]:
        return concurrent.futures.ProcessPoolExecutor(max_workers=PROCESSES)

    def map(self, pool: Any, items: range) -> list[Any]:
        return list(pool.map(inc, items))  # chunksize=1, its default

    def imap(self, pool: Any, items: range) -> list[Any]:
        return list(pool.map(inc, items))

    def imap_chunked(self, pool: Any, items: range, chunksize: int) -> list[Any]:
        return list(pool.map(inc, items, chunksize=chunksize))

    def cpu_map(self, pool: Any, items: list[int]) -> list[Any]:
        return list(pool.map(spin, items))

    def submit_all(self, pool: Any, items: range) -> list[Any] | None:
        futures = [pool.submit(inc, x) for x in items]
        return [f.result() for f in futures]

    def apply(self, pool: Any, fn: Callable[[Any], Any], x: Any) -> Any:
        return pool.submit(fn, x).result()

    def submit_all_of(self, pool: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        futures = [pool.submit(fn, x) for x in items]
        return [f.result() for f in futures]


class JoblibApi(PoolApi):
    """The "pool" is a ``Parallel(n_jobs=2)`` in a ``with`` block (which keeps its
    backend for every call in the block); each call is one ``Parallel`` call."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.joblib: Any = importlib.import_module("joblib")

    def open(self, workload: str) -> AbstractContextManager[Any]:
        # The CPU workload maps one task per chunk, as the others do with chunksize=1.
        batch: Any = 1 if workload == "cpu" else "auto"
        parallel: AbstractContextManager[Any] = self.joblib.Parallel(
            n_jobs=PROCESSES, batch_size=batch
        )
        return parallel

    def map(self, pool: Any, items: range) -> list[Any]:
        delayed = self.joblib.delayed
        return list(pool(delayed(inc)(x) for x in items))

    def imap(self, pool: Any, items: range) -> list[Any]:
        return self.map(pool, items)

    def imap_chunked(self, pool: Any, items: range, chunksize: int) -> list[Any]:
        return self.map(pool, items)

    def cpu_map(self, pool: Any, items: list[int]) -> list[Any]:
        delayed = self.joblib.delayed
        return list(pool(delayed(spin)(x) for x in items))

    def submit_all(self, pool: Any, items: range) -> list[Any] | None:
        return None

    def apply(self, pool: Any, fn: Callable[[Any], Any], x: Any) -> Any:
        return pool([self.joblib.delayed(fn)(x)])[0]

    def submit_all_of(self, pool: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        delayed = self.joblib.delayed
        return list(pool(delayed(fn)(x) for x in items))


class MpireApi(PoolApi):
    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.mpire: Any = importlib.import_module("mpire")

    def open(self, workload: str) -> AbstractContextManager[Any]:
        pool: AbstractContextManager[Any] = self.mpire.WorkerPool(n_jobs=PROCESSES)
        return pool

    def map(self, pool: Any, items: range) -> list[Any]:
        return list(pool.map(inc, items))

    def imap(self, pool: Any, items: range) -> list[Any]:
        return list(pool.imap(inc, items))

    def imap_chunked(self, pool: Any, items: range, chunksize: int) -> list[Any]:
        return list(pool.imap(inc, items, chunk_size=chunksize))

    def cpu_map(self, pool: Any, items: list[int]) -> list[Any]:
        return list(pool.map(spin, items, chunk_size=1))

    def submit_all(self, pool: Any, items: range) -> list[Any] | None:
        results = [pool.apply_async(inc, (x,)) for x in items]
        return [r.get() for r in results]

    def apply(self, pool: Any, fn: Callable[[Any], Any], x: Any) -> Any:
        return pool.apply(fn, (x,))

    def submit_all_of(self, pool: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        results = [pool.apply_async(fn, (x,)) for x in items]
        return [r.get() for r in results]


class PebbleApi(PoolApi):
    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.pebble: Any = importlib.import_module("pebble")

    def open(self, workload: str) -> AbstractContextManager[Any]:
        pool: AbstractContextManager[Any] = self.pebble.ProcessPool(max_workers=PROCESSES)
        return pool

    def map(self, pool: Any, items: range) -> list[Any]:
        return list(pool.map(inc, items).result())  # chunksize=1, its default

    def imap(self, pool: Any, items: range) -> list[Any]:
        return self.map(pool, items)

    def imap_chunked(self, pool: Any, items: range, chunksize: int) -> list[Any]:
        return list(pool.map(inc, items, chunksize=chunksize).result())

    def cpu_map(self, pool: Any, items: list[int]) -> list[Any]:
        return list(pool.map(spin, items, chunksize=1).result())

    def submit_all(self, pool: Any, items: range) -> list[Any] | None:
        futures = [pool.schedule(inc, (x,)) for x in items]
        return [f.result() for f in futures]

    def apply(self, pool: Any, fn: Callable[[Any], Any], x: Any) -> Any:
        return pool.schedule(fn, (x,)).result()

    def submit_all_of(self, pool: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        futures = [pool.schedule(fn, (x,)) for x in items]
        return [f.result() for f in futures]


@dataclass(frozen=True)
class Peer:
    name: str
    label: str  # what it is, for the header
    module: str | None  # the distribution that must be installed, if any
    make: Callable[[dict[str, Any]], PoolApi]
    slow: frozenset[str]  # workloads in which it gets the smaller ("slow") sizes

    def available(self) -> str | None:
        """None when the peer can run here, otherwise why not."""
        if self.module is not None and importlib.util.find_spec(self.module) is None:
            return "not installed"
        return None

    def version(self) -> str:
        if self.module is None:
            return ""
        try:
            return importlib.metadata.version(self.module)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"


PEERS: list[Peer] = [
    Peer("shoal", "shoal.Pool", None, ShoalApi, frozenset()),
    Peer(
        "mp-fork",
        "multiprocessing.Pool, fork",
        None,
        lambda o: MpApi(o, "fork"),
        frozenset({"imap"}),
    ),
    Peer(
        "mp-spawn",
        "multiprocessing.Pool, spawn",
        None,
        lambda o: MpApi(o, "spawn"),
        frozenset({"imap"}),
    ),
    Peer(
        "ppe",
        "concurrent.futures.ProcessPoolExecutor",
        None,
        ExecutorApi,
        frozenset({"map", "imap"}),
    ),
    Peer("joblib", "joblib.Parallel (loky)", "joblib", JoblibApi, frozenset({"latency"})),
    Peer("mpire", "mpire.WorkerPool", "mpire", MpireApi, frozenset()),
    Peer("pebble", "pebble.ProcessPool", "pebble", PebbleApi, frozenset({"map", "imap"})),
]


# --- workloads and rows -----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    slug: str
    workload: str  # the cell that measures it
    label: str
    unit: str  # "rate" (higher is better), "us" / "ms" (lower is better), "eff"

    @property
    def lower_is_better(self) -> bool:
        return self.unit in ("us", "ms")


ROWS: list[Row] = [
    Row("map", "map", "map(inc), items/s", "rate"),
    Row("imap", "imap", "imap(inc) at defaults, items/s", "rate"),
    Row("imap-chunked", "imap-chunked", "imap(inc, chunksize=n/8), items/s", "rate"),
    Row("submit", "submit", "apply_async x N then get, tasks/s", "rate"),
    Row("submit-future", "submit", "... shoal.submit (futures), tasks/s", "rate"),
    Row("latency", "latency", "apply round trip, median µs", "us"),
    Row("cpu", "cpu", "CPU-bound 2 workers, efficiency", "eff"),
    Row("start-first", "startup", "1st pool: start → 1st result, ms", "ms"),
    Row("stop-first", "startup", "1st pool: start → shut down, ms", "ms"),
    Row("start-later", "startup", "later pools: start → 1st result, ms", "ms"),
    Row("stop-later", "startup", "later pools: start → shut down, ms", "ms"),
]
WORKLOADS = ["map", "imap", "imap-chunked", "submit", "latency", "cpu", "startup"]


@dataclass(frozen=True)
class Sizes:
    map: int
    map_slow: int
    imap: int
    imap_slow: int
    imap_chunked: int
    submit: int
    latency: int
    latency_slow: int
    latency_warmup: int
    cpu_tasks: int
    later_pools: int

    def items(self, workload: str, slow: bool) -> int:
        if workload == "map":
            return self.map_slow if slow else self.map
        if workload == "imap":
            return self.imap_slow if slow else self.imap
        if workload == "imap-chunked":
            return self.imap_chunked
        if workload == "submit":
            return self.submit
        if workload == "latency":
            return self.latency_slow if slow else self.latency
        if workload == "cpu":
            return self.cpu_tasks
        return self.later_pools


FULL = Sizes(1_000_000, 20_000, 100_000, 20_000, 1_000_000, 20_000, 2_000, 200, 100, 200, 5)
QUICK = Sizes(50_000, 2_000, 10_000, 2_000, 80_000, 2_000, 200, 50, 20, 20, 2)


# --- one run of a cell (in its own interpreter) -----------------------------------------


def _check(name: str, got: Sequence[Any], expected: Sequence[Any]) -> None:
    if len(got) != len(expected):
        raise RuntimeError(f"{name}: {len(got)} results, expected {len(expected)}")
    if list(got) != list(expected):
        bad = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        raise RuntimeError(f"{name}: result {bad} is {got[bad]!r}, expected {expected[bad]!r}")


def _expected_inc(n: int) -> range:
    return range(1, n + 1)


def run_cell(
    peer: Peer, workload: str, n: int, spin_n: int, options: dict[str, Any], extra: dict[str, Any]
) -> Any:
    """Measures one run; returns ``{row slug: value}``. Raises when a result is wrong.
    ``options`` go to the pool's constructor (shoal only), ``extra`` to the workload."""
    api = peer.make(options)
    if workload == "startup":
        return _run_startup(api, n)
    task_s = spin_time(spin_n) if workload == "cpu" else 0.0
    with api.open(workload) as pool:
        api.warm_up(pool)
        if workload in ("map", "imap", "imap-chunked"):
            items = range(n)
            t0 = time.perf_counter()
            if workload == "imap-chunked":
                out = api.imap_chunked(pool, items, n // 8)
            else:
                out = (api.map if workload == "map" else api.imap)(pool, items)
            elapsed = time.perf_counter() - t0
            _check(workload, out, _expected_inc(n))
            return {workload: n / elapsed}
        if workload == "submit":
            values: dict[str, float] = {}
            for slug, submit in (
                ("submit", api.submit_all),
                ("submit-future", api.submit_futures),
            ):
                t0 = time.perf_counter()
                maybe = submit(pool, range(n))
                elapsed = time.perf_counter() - t0
                if maybe is None:
                    continue
                _check(slug, maybe, _expected_inc(n))
                values[slug] = n / elapsed
            if not values:
                return {"submit": "n/a"}
            return values
        if workload == "latency":
            warmup = min(int(extra["latency_warmup"]), n // 10)
            for i in range(warmup):
                if api.apply(pool, inc, i) != i + 1:
                    raise RuntimeError("latency: a warm-up result is wrong")
            times: list[float] = []
            results: list[Any] = []
            for i in range(n):
                t0 = time.perf_counter()
                r = api.apply(pool, inc, i)
                times.append(time.perf_counter() - t0)
                results.append(r)
            _check("latency", results, _expected_inc(n))
            return {"latency": statistics.median(times) * 1e6}
        if workload == "cpu":
            t0 = time.perf_counter()
            out = api.cpu_map(pool, [spin_n] * n)
            elapsed = time.perf_counter() - t0
            _check("cpu", out, [spin_n * (spin_n - 1) // 2] * n)
            # The faster of the times before and after the map: this machine's clock may
            # have ramped up meanwhile, and the slower one would flatter the pool.
            task_s = min(task_s, spin_time(spin_n, warm_s=0.0))
            return {"cpu": n * task_s / (PROCESSES * elapsed)}
    raise ValueError(f"unknown workload {workload!r}")


def _one_pool(api: PoolApi) -> tuple[float, float]:
    """(start → first result, start → end of the with block), in ms."""
    t0 = time.perf_counter()
    with api.open("startup") as pool:
        r = api.apply(pool, inc, 1)
        t1 = time.perf_counter()
    t2 = time.perf_counter()
    if r != 2:
        raise RuntimeError(f"startup: apply(inc, (1,)) returned {r!r}")
    return (t1 - t0) * 1e3, (t2 - t0) * 1e3


def _run_startup(api: PoolApi, later: int) -> dict[str, float]:
    first, first_stop = _one_pool(api)
    rest = [_one_pool(api) for _ in range(later)]
    return {
        "start-first": first,
        "stop-first": first_stop,
        "start-later": statistics.median(r[0] for r in rest),
        "stop-later": statistics.median(r[1] for r in rest),
    }


def cell_main(spec: str) -> int:
    """The ``--_cell`` entry: one run, its result as one JSON line on stdout."""
    params = json.loads(spec)
    peer = next(p for p in PEERS if p.name == params["peer"])
    options: dict[str, Any] = dict(params["options"]) if peer.name == "shoal" else {}
    try:
        values = run_cell(
            peer, params["workload"], params["n"], params["spin_n"], options, params["extra"]
        )
        out: dict[str, Any] = {"values": values}
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}"[:200]}
    print(json.dumps(out), flush=True)
    return 0


def spawn_cell(
    peer: Peer, workload: str, n: int, spin_n: int, options: dict[str, Any], extra: dict[str, Any]
) -> dict[str, float] | str:
    """Runs ``cell_main`` in a fresh interpreter; ``{row: value}``, or why there is none."""
    spec = json.dumps(
        {
            "peer": peer.name,
            "workload": workload,
            "n": n,
            "spin_n": spin_n,
            "options": options,
            "extra": extra,
        }
    )
    cmd = [sys.executable, os.path.abspath(__file__), "--_cell", spec]
    # Its own session, so that a run that hangs is stopped with every process it started.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=CELL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"timeout ({CELL_TIMEOUT_S:.0f} s)"
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return f"crashed: {tail[0][:120]}"
    result = json.loads(lines[-1])
    if "error" in result:
        return str(result["error"])
    values = result["values"]
    if "submit" in values and values["submit"] == "n/a":
        return "n/a"
    return {str(k): float(v) for k, v in values.items()}


# --- calibration ------------------------------------------------------------------------


def spin_time(n: int, runs: int = 7, warm_s: float = 0.3) -> float:
    """The median time of ``spin(n)`` here, after ``warm_s`` of spinning: the CPU's clock
    may ramp up under load, and a cold measurement would flatter every pool."""
    deadline = time.perf_counter() + warm_s
    while time.perf_counter() < deadline:
        spin(10_000)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        spin(n)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def calibrate_spin(target_s: float) -> tuple[int, float]:
    """A loop count for ``spin`` that takes about ``target_s`` here, and its time."""
    spin_time(10_000, runs=1)
    n = 10_000
    while True:
        t0 = time.perf_counter()
        spin(n)
        elapsed = time.perf_counter() - t0
        if elapsed > target_s / 4:
            break
        n *= 4
    n = max(int(n * target_s / elapsed), 1)
    return n, spin_time(n)


# --- reporting --------------------------------------------------------------------------


def fmt_value(value: float | str, row: Row) -> str:
    if isinstance(value, str):
        return value
    if row.unit == "rate":
        if value >= 1e6:
            return f"{value / 1e6:.2f}M/s"
        if value >= 1e4:
            return f"{value / 1e3:.0f}k/s"
        return f"{value / 1e3:.1f}k/s"
    if row.unit == "us":
        return f"{value:,.0f} µs" if value >= 100 else f"{value:.1f} µs"
    if row.unit == "ms":
        return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"
    return f"{value:.3f}"


def ratio(
    row: Row, shoal_value: float | str | None, peer_value: float | str | None
) -> float | None:
    """shoal / peer, or peer / shoal for times: above 1 when shoal does better."""
    if not isinstance(shoal_value, float) or not isinstance(peer_value, float):
        return None
    a, b = (peer_value, shoal_value) if row.lower_is_better else (shoal_value, peer_value)
    return a / b if b > 0 else None


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def better(row: Row, a: float, b: float) -> bool:
    return a < b if row.lower_is_better else a > b


def print_table(
    rows: Sequence[Row],
    peers: Sequence[Peer],
    cells: dict[tuple[str, str], float | str],
    marks: dict[tuple[str, str], str],
) -> None:
    names = [p.name for p in peers]
    others = [n for n in names if n != "shoal"] if "shoal" in names else []
    header = ["workload", *names, *[f"shoal÷{n}" for n in others]]
    table = [header]
    for row in rows:
        line = [row.label]
        for n in names:
            text = fmt_value(cells.get((row.slug, n), "-"), row)
            line.append(text + marks.get((row.slug, n), ""))
        line += [
            fmt_ratio(ratio(row, cells.get((row.slug, "shoal")), cells.get((row.slug, n))))
            for n in others
        ]
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        padded = [
            c.ljust(w) if j == 0 else c.rjust(w)
            for j, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("| " + " | ".join(padded) + " |")
        if i == 0:  # the first column left-aligned, the figures right-aligned
            rule = [":" + "-" * (widths[0] - 1)] + ["-" * (w - 1) + ":" for w in widths[1:]]
            print("| " + " | ".join(rule) + " |")


# (row, peer, the least ratio) and (row, bound on shoal's own figure) the project aims for.
RATIO_TARGETS: list[tuple[str, str, float]] = [
    ("imap", "mp-fork", 20.0),
    ("imap", "joblib", 1.5),
    ("submit", "mp-fork", 3.0),
    ("submit", "ppe", 8.0),
    ("latency", "mp-fork", 5.0),
    ("map", "mp-fork", 1.2),
    ("imap-chunked", "mp-fork", 1.0),
]
ABSOLUTE_TARGETS: list[tuple[str, str, float]] = [
    ("cpu", ">=", 0.98),
    ("start-first", "<=", 60.0),
    ("start-later", "<=", 10.0),
]


def print_targets(rows: Sequence[Row], cells: dict[tuple[str, str], float | str]) -> None:
    by_slug = {r.slug: r for r in rows}
    lines = []
    for slug, peer, least in RATIO_TARGETS:
        if slug not in by_slug or (slug, "shoal") not in cells or (slug, peer) not in cells:
            continue
        row = by_slug[slug]
        r = ratio(row, cells[slug, "shoal"], cells[slug, peer])
        verdict = "no figure" if r is None else ("met" if r >= least else "missed")
        lines.append(f"- {row.label}: shoal÷{peer} >= {least:g}x: {fmt_ratio(r)}, {verdict}")
    for slug, op, bound in ABSOLUTE_TARGETS:
        if slug not in by_slug or (slug, "shoal") not in cells:
            continue
        row = by_slug[slug]
        v = cells[slug, "shoal"]
        if isinstance(v, float):
            ok = v >= bound if op == ">=" else v <= bound
            verdict = "met" if ok else "missed"
        else:
            verdict = "no figure"
        lines.append(
            f"- {row.label}: shoal {op} {fmt_value(bound, row)}: {fmt_value(v, row)}, {verdict}"
        )
    if lines:
        print("\nTargets (informational, not checked):\n")
        print("\n".join(lines))


# --- main -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:  # noqa: C901 (a branch per case)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: small sizes, 1 repeat (< 1 minute)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this peer ({', '.join(p.name for p in PEERS)}) or workload "
        f"({', '.join(WORKLOADS)}); may be given more than once",
    )
    parser.add_argument("--repeats", type=int, help="runs per cell, the best kept (default 3)")
    parser.add_argument(
        "--shoal-backend",
        metavar="NAME",
        help="passed to shoal.Pool as backend= (default: shoal.backends.DEFAULT_BACKEND)",
    )
    parser.add_argument(
        "--shoal-start-method",
        metavar="NAME",
        help="passed to shoal.Pool as start_method= (not passed unless given)",
    )
    parser.add_argument("--_cell", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._cell is not None:
        return cell_main(args._cell)

    only: list[str] = args.only or []
    peer_names = [p.name for p in PEERS]
    unknown = [n for n in only if n not in peer_names and n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown --only {unknown}; choose from {peer_names + WORKLOADS}")
    peers = [p for p in PEERS if p.name in only] or list(PEERS)
    workloads = [w for w in WORKLOADS if w in only] or list(WORKLOADS)
    rows = [r for r in ROWS if r.workload in workloads]
    repeats: int = args.repeats or (1 if args.quick else 3)
    sizes = QUICK if args.quick else FULL

    shoal_options: dict[str, Any] = {}
    if args.shoal_backend is not None:
        shoal_options["backend"] = args.shoal_backend
    if args.shoal_start_method is not None:
        shoal_options["start_method"] = args.shoal_start_method
    used_backend = args.shoal_backend or shoal.backends.DEFAULT_BACKEND

    print(
        f"shoal {shoal.__version__} ({shoal.__file__}), Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start"
    )
    print(
        f"shoal default backend: {shoal.backends.DEFAULT_BACKEND!r}; used: {used_backend!r}"
        + (
            f", start_method={args.shoal_start_method!r}"
            if args.shoal_start_method is not None
            else ""
        )
    )
    print(
        "Peers: "
        + "; ".join(
            f"{p.name} = {p.label}" + (f" {p.version()}" if p.module else "") for p in peers
        )
    )
    print(
        f"{PROCESSES} workers each; every run a fresh interpreter; each cell the best of "
        f"{repeats} run(s); ratios shoal÷peer (times: peer÷shoal), above 1 = shoal better."
    )

    spin_n, task_s = 0, 0.0
    if "cpu" in workloads:
        spin_n, task_s = calibrate_spin(CPU_TASK_S)
        print(f"CPU task: spin({spin_n:,}), {task_s * 1e3:.1f} ms here (median of 7).")
    print(flush=True)

    extra: dict[str, Any] = {"latency_warmup": sizes.latency_warmup}
    cells: dict[tuple[str, str], float | str] = {}
    marks: dict[tuple[str, str], str] = {}
    failures: list[str] = []
    started = time.perf_counter()
    for workload in workloads:
        wrows = [r for r in rows if r.workload == workload]
        runnable: list[Peer] = []
        for peer in peers:
            why_not = peer.available()
            if why_not is not None:
                for r in wrows:
                    cells[r.slug, peer.name] = why_not
            else:
                runnable.append(peer)
        for rep in range(repeats):
            for peer in runnable:
                slow = workload in peer.slow
                n = sizes.items(workload, slow)
                t0 = time.perf_counter()
                outcome = spawn_cell(peer, workload, n, spin_n, shoal_options, extra)
                took = time.perf_counter() - t0
                if isinstance(outcome, str):
                    short = "n/a" if outcome == "n/a" else outcome.split(":")[0].split(" (")[0]
                    for r in wrows:
                        cells.setdefault((r.slug, peer.name), short)
                    if outcome != "n/a":
                        failures.append(f"{workload} {peer.name} run {rep + 1}: {outcome}")
                        for r in wrows:
                            marks[r.slug, peer.name] = " *"
                    shown = outcome
                else:
                    if workload == "submit" and "submit-future" not in outcome:
                        # The peer has one API for it: the same figure in both rows.
                        outcome["submit-future"] = outcome["submit"]
                    for slug, value in outcome.items():
                        row = next(r for r in wrows if r.slug == slug)
                        best = cells.get((slug, peer.name))
                        if not isinstance(best, float) or better(row, value, best):
                            cells[slug, peer.name] = value
                        if slow:
                            marks.setdefault((slug, peer.name), " †")
                    shown = ", ".join(
                        f"{slug} {fmt_value(v, next(r for r in wrows if r.slug == slug))}"
                        for slug, v in outcome.items()
                    )
                print(
                    f"  {workload:<8} {peer.name:<9} run {rep + 1}/{repeats} "
                    f"({took:.1f} s): {shown}",
                    file=sys.stderr,
                    flush=True,
                )

    print_table(rows, peers, cells, marks)
    print()
    notes = [
        f"Sizes: map {sizes.map:,} items, imap {sizes.imap:,}, submit {sizes.submit:,} tasks, "
        f"latency {sizes.latency:,} round trips after {sizes.latency_warmup} not counted, "
        f"cpu {sizes.cpu_tasks} tasks of ~{CPU_TASK_S * 1e3:.0f} ms, startup: the first pool "
        f"and the median of {sizes.later_pools} more in the same interpreter.",
        f"† fewer items ({sizes.map_slow:,} for map, {sizes.imap_slow:,} for imap): the peer's "
        "default chunk size is 1 (ProcessPoolExecutor.map, pebble's map, multiprocessing's "
        f"imap); the figure is still per item. joblib's latency: {sizes.latency_slow} round "
        "trips (each is a Parallel call, milliseconds long).",
        "ppe, pebble: their map is their imap. joblib: one Parallel(n_jobs=2) call per "
        "map/imap (batch_size='auto'; 1 for cpu) and per round trip; it has no submit API "
        "(n/a); its loky workers outlive a Parallel block and later 'pools' reuse them. "
        "mpire: keep_alive=False (its default), so each map/imap starts and stops its workers.",
        "submit rows: shoal uses apply_async, then submit; a peer with one API for it "
        "(ppe submit, pebble schedule, mp and mpire apply_async) shows the same figure in both.",
        f"cpu: efficiency = tasks x (one task's time, the faster of two medians measured in "
        f"the run's interpreter before its pool starts and after the map) / ({PROCESSES} x "
        f"wall time). shoal's backend here is {used_backend!r}.",
    ]
    print("\n".join(f"- {n}" for n in notes))
    if failures:
        print("\n\\* Runs that failed (left out of the best):\n")
        print("\n".join(f"- {f}" for f in failures))
    print_targets(rows, cells)
    print(f"\nTotal time: {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
