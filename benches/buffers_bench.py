"""Large numpy arrays through process pools: ``shoal.Pool`` beside its peers, in one run.

Workloads (2 workers each; every figure is the best of ``--repeats`` runs, each in a fresh
interpreter, after one identical warm-up round in the same pool; the first round through
fresh shared memory is slower for shoal, whose arena pages are then touched for the first
time: ``--cold`` measures that round instead):

* ``results``: 64 tasks each returning a fresh 16 MiB float64 array; GB/s of results
  delivered to the caller.
* ``inputs``: 64 tasks each receiving a distinct 16 MiB array (built beforehand) and
  returning a float; GB/s of arguments delivered to the workers.
* ``shared``: 1,000 tasks (in each pool's default chunks for a map of that length) each
  summing one thousandth of one 1 GiB array that every task is given (``shoal.shared``;
  ``ray.put``; Dask's ``scatter(broadcast=True)``; joblib's memory-mapping of large
  arguments); GB/s of the array read. The reference is the same
  work done by one process per core with the array already in its memory (``baseline``:
  2 processes forked after the array was made, each summing its half, no pool at all).
  multiprocessing, ProcessPoolExecutor and mpire have no way to share an input other than
  that same fork trick: n/a.

Peers: multiprocessing.Pool (fork), ProcessPoolExecutor, joblib (loky, with its automatic
memory-mapping of large arguments), mpire, Ray and Dask (a local cluster started here:
``LocalCluster`` with 2 single-threaded worker processes). A peer that is not installed is
reported as such (``pip install ".[bench]"`` installs them all).

Usage: ``python benches/buffers_bench.py [--only NAME]... [--repeats N]``
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TASKS = 64
ARRAY_BYTES = 16 << 20
PROCESSES = 2
PEERS = ["shoal", "mp-fork", "ppe", "joblib", "mpire", "ray", "dask", "baseline"]
WORKLOADS = ["results", "inputs", "shared"]
SHARED_BYTES = 1 << 30
SLICES = 1000
# Who can share an input with every task, and how the task receives it.
SHARING = {"shoal", "joblib", "ray", "dask", "baseline"}
CELL_TIMEOUT_S = 300.0


def make(i: int) -> np.ndarray:
    """A fresh 16 MiB array whose every item is ``i``."""
    a = np.empty(ARRAY_BYTES // 8)
    a.fill(float(i))
    return a


def consume(a: np.ndarray) -> float:
    """Reads the array (its ends) and answers a number, as a task that reduces it would."""
    return float(a[0] + a[-1])


def part(handle: Any, i: int) -> float:
    """Sums slice ``i`` of ``SLICES`` of the shared array (reached through ``handle``)."""
    array = _shared_value(handle)
    n = array.shape[0] // SLICES
    return float(array[i * n : (i + 1) * n].sum())


def _shared_value(handle: Any) -> np.ndarray:
    if isinstance(handle, np.ndarray):
        return handle
    value: np.ndarray = handle.value  # shoal.Shared
    return value


def _baseline_shared() -> float:
    """GB/s of ``PROCESSES`` processes forked after the array was made, each summing its
    share of the slices, started together: the same work with no pool and no transport."""
    import multiprocessing

    array = np.arange(SHARED_BYTES // 8, dtype=np.float64)
    ctx = multiprocessing.get_context("fork")
    start, done = ctx.Barrier(PROCESSES + 1), ctx.Queue()

    def work(first: int) -> None:
        for _ in range(2):  # a warm-up pass, then the timed one
            start.wait()
            total = sum(part(array, i) for i in range(first, SLICES, PROCESSES))
            done.put(total)

    procs = [ctx.Process(target=work, args=(k,)) for k in range(PROCESSES)]
    for p in procs:
        p.start()
    for _ in range(2):
        start.wait()
        t0 = time.perf_counter()
        for _ in procs:
            done.get()
        elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return SHARED_BYTES / elapsed / 1e9


def _shared_handle(peer: str, array: np.ndarray) -> Any:
    """What each task is given for the shared array, by peer."""
    if peer == "shoal":
        import shoal

        return shoal.shared(array)
    if peer == "ray":
        ray: Any = importlib.import_module("ray")
        return ray.put(array)
    return array  # joblib memory-maps it; Dask is given it scattered (see _runner)


_DASK_CLIENT: list[Any] = []


def _runner(
    peer: str, batched: bool = False
) -> tuple[Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]], Any]:
    """``(map over a list, closer)`` for ``peer``: one task per chunk, or with ``batched``
    as many as the peer's own default puts in one (Ray and Dask have no batching)."""
    one = None if batched else 1
    if peer == "shoal":
        import shoal

        pool = shoal.Pool(PROCESSES)
        return (lambda f, xs: pool.map(f, xs, chunksize=one)), pool.terminate
    if peer == "mp-fork":
        import multiprocessing

        mp_pool = multiprocessing.get_context("fork").Pool(PROCESSES)
        return (lambda f, xs: mp_pool.map(f, xs, chunksize=one)), mp_pool.terminate
    if peer == "ppe":
        from concurrent.futures import ProcessPoolExecutor

        ppe = ProcessPoolExecutor(PROCESSES)
        return (lambda f, xs: list(ppe.map(f, xs))), ppe.shutdown
    if peer == "joblib":
        joblib: Any = importlib.import_module("joblib")

        # A Parallel per call, as joblib is used (its workers are kept between calls);
        # one reused across calls loses the memory-mapped arguments of the first.
        def joblib_map(f: Callable[[Any], Any], xs: Sequence[Any]) -> list[Any]:
            parallel = joblib.Parallel(n_jobs=PROCESSES, batch_size=one or "auto")
            return list(parallel(joblib.delayed(f)(x) for x in xs))

        return joblib_map, lambda: None
    if peer == "mpire":
        mpire: Any = importlib.import_module("mpire")
        wp = mpire.WorkerPool(PROCESSES, keep_alive=True)
        return (
            lambda f, xs: wp.map(f, xs, chunk_size=one, concatenate_numpy_output=False)
        ), wp.terminate
    if peer == "ray":
        ray: Any = importlib.import_module("ray")
        ray.init(num_cpus=PROCESSES, include_dashboard=False, log_to_driver=False)
        remotes: dict[Any, Any] = {}

        def ray_map(f: Callable[[Any], Any], xs: Sequence[Any]) -> list[Any]:
            if f is _star_part:
                # Ray hands a task the object behind a reference given as an argument.
                remote = remotes.setdefault(f, ray.remote(part))
                return list(ray.get([remote.remote(*x) for x in xs]))
            remote = remotes.setdefault(f, ray.remote(f))
            return list(ray.get([remote.remote(x) for x in xs]))

        return ray_map, ray.shutdown
    if peer == "dask":
        distributed: Any = importlib.import_module("dask.distributed")
        cluster = distributed.LocalCluster(
            n_workers=PROCESSES, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(cluster)
        _DASK_CLIENT[:] = [client]

        def dask_map(f: Callable[[Any], Any], xs: Sequence[Any]) -> list[Any]:
            if f is _star_part:
                # Dask hands a task the data behind a future given as an argument.
                handles, indices = zip(*xs, strict=True)
                return list(client.gather(client.map(part, handles, indices, pure=False)))
            return list(client.gather(client.map(f, xs, pure=False)))

        def close() -> None:
            client.close()
            cluster.close()

        return dask_map, close
    raise ValueError(f"unknown peer {peer!r}")


def cell(peer: str, workload: str, cold: bool = False) -> float:
    """One measurement in this interpreter: GB/s."""
    if workload == "shared":
        if peer not in SHARING:
            raise NotImplementedError("n/a")
        if peer == "baseline":
            return _baseline_shared()
        return _shared_cell(peer, cold)
    if peer == "baseline":
        raise NotImplementedError("n/a")
    run, close = _runner(peer)
    try:
        if workload == "results":
            items: list[Any] = list(range(TASKS))
            fn: Callable[[Any], Any] = make
        else:
            items = [make(i) for i in range(TASKS)]
            fn = consume
        # Warm-up, a whole round: workers started, code loaded, and memory each peer
        # reuses (pipes' buffers, shoal's arena, Ray's object store) touched once.
        run(fn, items if not cold else items[: PROCESSES * 2])
        t0 = time.perf_counter()
        out = run(fn, items)
        elapsed = time.perf_counter() - t0
        if workload == "results":
            bad = [i for i in (0, 5, TASKS - 1) if out[i][123] != i]
        else:
            bad = [i for i in (0, 5, TASKS - 1) if out[i] != 2.0 * i]
        if bad:
            raise RuntimeError(f"wrong result at {bad}")
        return TASKS * ARRAY_BYTES / elapsed / 1e9
    finally:
        close()


def _shared_cell(peer: str, cold: bool) -> float:
    array = np.arange(SHARED_BYTES // 8, dtype=np.float64)
    expected = sum(part(array, i) for i in range(SLICES))
    run, close = _runner(peer, batched=True)
    try:
        handle = _shared_handle(peer, array)
        if peer == "dask":
            handle = _DASK_CLIENT[0].scatter(array, broadcast=True)
        items = [(handle, i) for i in range(SLICES)]
        if not cold:
            run(_star_part, items)
        t0 = time.perf_counter()
        out = run(_star_part, items)
        elapsed = time.perf_counter() - t0
        if abs(sum(out) - expected) > 1e-6 * abs(expected):
            raise RuntimeError("wrong sums")
        return SHARED_BYTES / elapsed / 1e9
    finally:
        close()


def _star_part(item: tuple[Any, int]) -> float:
    return part(*item)


def spawn_cell(peer: str, workload: str, cold: bool) -> float | str:
    """Runs ``cell`` in a fresh interpreter; GB/s, or why there is none."""
    cmd = [sys.executable, __file__, "--_cell", json.dumps([peer, workload, cold])]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CELL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "timeout"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        if "NotImplementedError" in tail:
            return "n/a"
        return "not installed" if "ModuleNotFoundError" in tail else f"failed: {tail[:80]}"
    return float(lines[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="a peer or workload")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell, best kept")
    parser.add_argument("--cold", action="store_true", help="time the first round instead")
    parser.add_argument("--_cell", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._cell:
        peer, workload, cold = json.loads(args._cell)
        print(cell(peer, workload, cold), flush=True)
        return 0
    peers = [p for p in PEERS if p in args.only] or PEERS
    workloads = [w for w in WORKLOADS if w in args.only] or WORKLOADS
    if "shoal" not in peers:
        peers.insert(0, "shoal")
    table: dict[tuple[str, str], float | str] = {}
    for _ in range(args.repeats):
        for workload in workloads:
            for peer in peers:
                got = spawn_cell(peer, workload, args.cold)
                print(
                    f"  {workload:8} {peer:8} {got if isinstance(got, str) else f'{got:.2f} GB/s'}"
                )
                best = table.get((peer, workload))
                better = isinstance(got, float) and (not isinstance(best, float) or got > best)
                if better or best is None:
                    table[(peer, workload)] = got
    header = ["workload", *peers, *(f"shoal÷{p}" for p in peers[1:])]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for workload in workloads:
        row = [
            f"{SLICES} tasks reading one shared 1 GiB array, GB/s"
            if workload == "shared"
            else f"{TASKS} x 16 MiB {workload}, GB/s"
        ]
        for peer in peers:
            v = table[(peer, workload)]
            row.append(f"{v:.2f}" if isinstance(v, float) else v)
        mine = table[("shoal", workload)]
        for peer in peers[1:]:
            v = table[(peer, workload)]
            ok = isinstance(mine, float) and isinstance(v, float)
            row.append(f"{mine / v:.1f}x" if ok else "-")  # type: ignore[operator]
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
