"""Chaos: mixed work on a pool while its workers are killed, stopped and starved of memory.

Work of every kind runs at once from several threads, the way a busy program uses a pool:
tiny tasks through ``imap``, short sleeps through ``map_async`` with callbacks, large
arrays both ways through ``submit``'s futures, a ``shoal.shared`` object, asyncio awaits,
tasks that put into a ``shoal.Queue``, tasks that raise, crash their worker or hang. A
thread meanwhile kills a random worker every 50-300 ms (``SIGKILL``, or one time in five
``SIGSTOP``: only ``task_timeout`` frees a stopped one); with ``--memory-limit`` the
workers live in a memory cgroup and some tasks ask for more than it allows. Every task
must end exactly once, with its right result or, its retries spent, a named error
(``WorkerLostError``, ``TaskTimeoutError``); after the pool closes the program holds
nothing it did not hold before. The functions are this script's own, as in a user's
program run as ``__main__``.

``tests/test_chaos.py`` runs it for seconds on every backend; ``make soak`` for as long as
asked::

    python tests/chaos.py --backend process --seconds 600
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from typing import Any

import numpy as np
from cgroups import Admit
from chaos_faults import WORKERS, Faults, Holdings, Report, rss_mb

import shoal

ARRAY = np.arange(300_000, dtype=np.float64)  # 2.4 MB each way
KINDS = {
    "process": "tiny sleeps arrays shared awaits reports raises crashes stuck",
    "thread": "tiny sleeps arrays shared awaits reports raises blocked",
    "dask": "tiny sleeps arrays shared awaits raises crashes",
    "ray": "tiny sleeps arrays shared awaits raises crashes stuck",
}
RAISED = (ValueError, SystemExit, KeyboardInterrupt)
_QUEUE: Any = None
RELEASE = threading.Event()  # frees the thread backend's blocked task


def setup(queue: Any, cgroup_procs: str | None) -> None:
    """Each worker's initializer: the queue tasks report to; with a memory limit, the
    worker joins the cgroup before its first task."""
    global _QUEUE
    _QUEUE = queue
    if cgroup_procs is not None:
        with open(cgroup_procs, "w") as procs:
            procs.write(str(os.getpid()))


def inc(x: int) -> int:
    return x + 1


def nap(x: int) -> int:
    time.sleep(0.01)
    return x


def double(a: np.ndarray) -> np.ndarray:
    return a * 2


def read_shared(table: shoal.Shared[np.ndarray], i: int) -> float:
    return float(table.value[i])


def report(x: int) -> int:
    _QUEUE.put(x)
    return x


def throw(kind: type[BaseException]) -> None:
    raise kind(3)


def crash(how: str) -> None:
    if how == "segfault":
        ctypes.string_at(0)
    os._exit(3)


def hang() -> None:
    time.sleep(3600)


def blocked(x: int) -> int:
    RELEASE.wait()
    return x


def hog(megabytes: int) -> int:
    block = bytearray(megabytes << 20)
    block[::4096] = b"x" * len(block[::4096])
    return len(block) >> 20


def _loops(  # noqa: C901 (a loop per kind of work, side by side)
    pool: shoal.Pool,
    kinds: list[str],
    stop: threading.Event,
    checked: Callable[[str, Any, Any], None],
    out: Report,
    table: shoal.Shared[np.ndarray],
) -> Iterator[tuple[str, Callable[[], None]]]:
    """Each kind of work: a loop that runs until ``stop`` is set."""

    def tiny() -> None:
        while not stop.is_set():
            # (A cluster runs a few hundred tasks a second: shorter batches end sooner.)
            n = 2000 if out.backend in ("process", "thread") else 200
            it = pool.imap(inc, range(n))
            for i in range(n):
                try:
                    checked("imap", i + 1, next(it))
                except Exception as exc:
                    checked("imap", i + 1, exc)

    def sleeps() -> None:
        while not stop.is_set():
            called: list[Any] = []
            result = pool.map_async(
                nap, range(40), chunksize=4, callback=called.append, error_callback=called.append
            )
            try:
                value: Any = result.get(120)
            except Exception as exc:
                value = exc
            checked("map_async", list(range(40)), value)
            checked("map_async's callback", [value], called)  # once, before get() returned

    def arrays() -> None:
        while not stop.is_set():
            futures = {pool.submit(double, ARRAY): i for i in range(4)}
            for future in as_completed(futures, timeout=120):
                try:
                    checked("submit", ARRAY * 2, future.result())
                except Exception as exc:
                    checked("submit", ARRAY * 2, exc)

    def shared() -> None:
        expected = [float(i) for i in range(0, 300_000, 30_000)]
        while not stop.is_set():
            try:
                got: Any = pool.starmap(read_shared, [(table, int(i)) for i in expected])
            except Exception as exc:
                got = exc
            checked("shared", expected, got)

    def awaits() -> None:
        async def main() -> None:
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    got: Any = await pool.apply_async(inc, (40,))
                except Exception as exc:
                    got = exc
                out.calls.append(time.perf_counter() - began)
                checked("await", 41, got)

        asyncio.run(main())

    def reports() -> None:
        while not stop.is_set():
            try:
                got: Any = pool.map(report, range(20))
            except Exception as exc:
                got = exc
            checked("report", list(range(20)), got)

    def raises() -> None:
        while not stop.wait(0.05):
            for kind in RAISED:
                try:
                    got: Any = pool.apply(throw, (kind,))
                except BaseException as exc:
                    got = exc
                checked(f"raise {kind.__name__}", kind, got)

    def crashes() -> None:
        while not stop.wait(1.0):
            for how in ("segfault", "exit"):
                began = time.perf_counter()
                try:
                    got: Any = pool.apply(crash, (how,))
                except Exception as exc:
                    got = exc
                out.crashes.append(time.perf_counter() - began)
                checked(f"crash by {how}", shoal.WorkerLostError, got)

    def stuck() -> None:
        while not stop.wait(1.0):
            try:
                got: Any = pool.apply(hang, task_timeout=1)
            except Exception as exc:
                got = exc
            checked("hang", shoal.TaskTimeoutError, got)

    def blocked_task() -> None:
        # A thread blocked for the whole run costs that one thread, not the pool.
        result = pool.apply_async(blocked, (5,))
        stop.wait()
        RELEASE.set()
        checked("blocked", 5, result.get(60))

    def hogs() -> None:
        while not stop.wait(0.5):
            began = time.perf_counter()
            try:
                got: Any = pool.apply(hog, (400,))
            except shoal.WorkerLostError as exc:
                # Named; and, when the kernel's OOM killer ended it, said so (the last
                # of its tries may have met a random SIGKILL instead).
                got = exc
                if exc.out_of_memory:
                    out.faults["tasks killed for memory"] += 1
                    out.hogs.append(time.perf_counter() - began)
            except Exception as exc:
                got = exc
            checked("hog", 400, got)

    loops = {
        "tiny": tiny, "sleeps": sleeps, "arrays": arrays, "shared": shared,
        "awaits": awaits, "reports": reports, "raises": raises, "crashes": crashes,
        "stuck": stuck, "blocked": blocked_task, "hogs": hogs,
    }  # fmt: skip
    for name in kinds:
        yield name, loops[name]


def run(
    seconds: float,
    backend: str = "process",
    *,
    start_method: str | None = None,
    faults: bool = True,
    memory_limit_mb: int | None = None,
    workers: int = 4,
    retries: int = 2,
    task_timeout: float = 5,
) -> Report:
    """A chaos run of ``seconds`` on a pool of ``backend``; its report.

    Raises:
        OSError: ``memory_limit_mb`` was asked for where a memory cgroup cannot be made.
    """
    kinds = KINDS[backend].split()
    options: dict[str, Any] = {"backend": backend}
    if backend != "thread":
        options["retries"] = retries
    if "stuck" in kinds:
        options["task_timeout"] = task_timeout
    if start_method is not None:
        options["start_method"] = start_method
    with contextlib.ExitStack() as stack:
        admit = None
        if memory_limit_mb is not None:
            from cgroups import memory_cgroup

            admit = stack.enter_context(memory_cgroup(memory_limit_mb << 20))
            kinds.append("hogs")
        # A first pool starts what lives as long as the program does (the zygote, a
        # cluster's client threads): what is left after the run is measured from here.
        with shoal.Pool(1, **options) as warm:
            warm.apply(abs, (-1,))
        before = Holdings.now()
        out = Report(backend=backend)
        _chaos(out, seconds, workers, options, kinds, faults, admit)
        for thing in Holdings.now().gained_since(before):
            # Ray itself leaves descriptors behind each ray.init() and ray.shutdown() (one
            # or more each time, with no pool involved): its sockets and log files; and
            # threads of its own code (two "client.poll0" each time, gRPC's thread pool).
            if backend == "ray" and (
                "socket:" in thing or "/tmp/ray/" in thing or "not a Python thread" in thing
            ):
                continue
            out.wrong.append(f"left after the pool closed: {thing}")
        out.rss_mb = (before.rss_mb, out.rss_mb[1], Holdings.now().rss_mb)
    return out


def _chaos(
    out: Report,
    seconds: float,
    workers: int,
    options: dict[str, Any],
    kinds: list[str],
    faults: bool,
    admit: Admit | None,
) -> None:
    lock, stop = threading.Lock(), threading.Event()

    def checked(name: str, expected: Any, got: Any) -> None:
        with lock:
            out.check(name, expected, got)

    queue: shoal.Queue[int] | None = None
    if "reports" in kinds:
        queue = shoal.Queue()
    procs = str(admit.procs) if admit is not None else None
    if queue is not None or procs is not None:
        options = {**options, "initializer": setup, "initargs": (queue, procs)}
    table = shoal.shared(ARRAY)
    started = time.monotonic()
    with shoal.Pool(workers, **options) as pool:
        injected = None
        if faults and (find := WORKERS.get(options["backend"])) is not None:
            cluster = options["backend"] != "process"
            injected = Faults(
                pool,
                find,
                every=(0.5, 1.5) if cluster else (0.05, 0.3),
                # Never stopped: a cluster's worker (Dask and Ray cannot stop a running
                # task), or one in a memory cgroup, where a stopped worker stalls the
                # others' allocations (the kernel reclaims and waits before it kills).
                stop_share=0.0 if cluster or admit is not None else 0.2,
            )
        threads = [
            threading.Thread(target=loop, name=f"chaos-{name}", daemon=True)
            for name, loop in _loops(pool, kinds, stop, checked, out, table)
        ]
        # Faults end with the run's time; the work then finishes what it started (a
        # worker left stopped is freed by task_timeout). On Ctrl-C the pool is
        # terminated at once, its threads left to die with the program.
        with injected or contextlib.nullcontext():
            for thread in threads:
                thread.start()
            stop.wait(seconds / 2)
            out.rss_mb = (0.0, rss_mb(), 0.0)
            stop.wait(seconds / 2)
        stop.set()
        RELEASE.set()
        for thread in threads:
            thread.join()
        if injected is not None:
            out.faults.update(injected.count)
        # (A failed future's error holds the frame that waited on it, and so the other
        # futures' arrays: a cycle that only the collector frees.)
        gc.collect()
        arena = pool.stats().arena
        if arena is not None and arena["in_use"]:
            out.wrong.append(f"{arena['in_use']} bytes of the arena still in use")
    out.seconds = time.monotonic() - started
    table.release()
    if queue is not None:
        # Tasks run again after their worker died may have put twice (at least once),
        # but the queue never holds a value no task put.
        drained: set[int] = set()
        with contextlib.suppress(shoal.Empty):
            while True:
                drained.add(queue.get(timeout=0.2))
        if drained - set(range(20)):
            out.wrong.append(f"the queue holds what no task put: {sorted(drained)[:5]}")
        queue.close()
        queue.join_thread()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="process", choices=sorted(KINDS))
    parser.add_argument("--start-method", default=None)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--task-timeout", type=float, default=5, help="frees stopped workers")
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--memory-limit", type=int, metavar="MB", default=None)
    parser.add_argument("--json", metavar="PATH", help="also write the report there")
    args = parser.parse_args()
    outcome = run(
        args.seconds,
        args.backend,
        start_method=args.start_method,
        faults=not args.no_faults,
        memory_limit_mb=args.memory_limit,
        retries=args.retries,
        task_timeout=args.task_timeout,
    )
    print(outcome.summary(), flush=True)
    for line in outcome.wrong[:20]:
        print("  wrong:", line, flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({**vars(outcome), "errors": dict(outcome.errors)}, file)
    sys.exit(1 if outcome.wrong else 0)


if __name__ == "__main__":
    main()
