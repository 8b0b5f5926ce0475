"""What ``chaos.py`` does to a pool and what it counts: the report of a run, the thread that
kills and stops workers, where each backend's worker processes are found, and what a
program holds (descriptors, threads, child processes, memory) before and after."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import statistics
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from programs import live_processes
from waiting import wait_for

import shoal

NAMED = (shoal.WorkerLostError, shoal.TaskTimeoutError)


@dataclass
class Report:
    """What a chaos run saw. ``wrong`` is what must never happen: a wrong value, an
    unnamed error, a task answered twice, something left behind."""

    backend: str = "process"
    tasks: int = 0
    right: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    calls: list[float] = field(default_factory=list)  # seconds each awaited call took
    # Seconds from calling a task that crashes its worker (every try) to its error.
    crashes: list[float] = field(default_factory=list)
    hogs: list[float] = field(default_factory=list)  # ... and one killed for memory
    seconds: float = 0.0
    # The program's resident memory: after warming up, halfway through, at the end.
    rss_mb: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def check(self, name: str, expected: Any, got: Any) -> None:
        """One task's end: ``expected`` (a value, or an exception class the task raises),
        a named error (its retries spent), or something wrong."""
        self.tasks += 1
        if isinstance(expected, type) and isinstance(got, expected):
            self.right += 1
        elif isinstance(got, BaseException):
            self.errors[type(got).__name__] += 1
            if not isinstance(got, NAMED):
                self.wrong.append(f"{name}: {type(got).__name__}: {got}")
        elif _same(got, expected):
            self.right += 1
        else:
            self.wrong.append(f"{name}: {got!r:.200} != {expected!r:.200}")

    def summary(self) -> str:
        """What happened, in a few lines."""
        minutes = self.seconds / 60 or 1.0
        faults = ", ".join(f"{n} {kind}" for kind, n in sorted(self.faults.items())) or "none"
        lines = [
            f"{self.backend}: {self.tasks} tasks in {self.seconds:.0f} s: {self.right} right, "
            f"{sum(self.errors.values())} named errors {dict(self.errors)}, "
            f"{len(self.wrong)} wrong",
            f"faults: {faults} ({sum(self.faults.values()) / minutes:.0f} a minute)",
        ]
        if self.calls:
            ms = sorted(c * 1000 for c in self.calls)
            p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
            lines.append(
                f"awaited calls: {len(ms)}, median {statistics.median(ms):.1f} ms, "
                f"p99 {p99:.0f} ms, slowest {ms[-1]:.0f} ms"
            )
        for times, what in (
            (self.crashes, "a task crashing its worker on every try"),
            (self.hogs, "a task killed for memory on every try"),
        ):
            if times:
                ms = sorted(t * 1000 for t in times)
                lines.append(
                    f"{what}: its error after {statistics.median(ms):.0f} ms median, "
                    f"{ms[-1]:.0f} ms at most ({len(ms)} calls)"
                )
        start, half, end = self.rss_mb
        lines.append(f"program memory: {start:.0f} MB, halfway {half:.0f} MB, end {end:.0f} MB")
        return "\n".join(lines)


def _same(got: Any, expected: Any) -> bool:
    if isinstance(expected, np.ndarray):
        return isinstance(got, np.ndarray) and bool(np.array_equal(got, expected))
    return bool(got == expected)


def process_workers(pool: shoal.Pool) -> list[int]:
    """The pool's worker processes (``backend="process"``)."""
    return [h.pid for h in pool._pool if h.pid is not None and h.is_alive()]


def dask_workers(pool: shoal.Pool) -> list[int]:
    """The worker processes of the Dask cluster the pool started (spawned by the nannies
    of its ``dask worker`` program; asking the busy scheduler would take seconds)."""
    nannies = [p for p in descendants(os.getpid()) if "distributed.cli.dask_worker" in _cmdline(p)]
    return [p for n in nannies for p in descendants(n) if "spawn_main" in _cmdline(p)]


def ray_workers(pool: shoal.Pool) -> list[int]:
    """Ray's worker processes started under this program (its local cluster's; never its
    agents, whose death takes the node down with them)."""
    found = [(pid, _cmdline(pid)) for pid in descendants(os.getpid())]
    return [pid for pid, line in found if line.startswith("ray::") and "Agent" not in line]


WORKERS: dict[str, Callable[[shoal.Pool], list[int]]] = {
    "process": process_workers,
    "dask": dask_workers,
    "ray": ray_workers,
}


class Faults:
    """A thread that, every ``every`` seconds (a random time in that range), kills a
    random worker with ``SIGKILL`` or, one time in ``stop_share``, stops one with
    ``SIGSTOP`` (never one stopped already: only ``task_timeout`` frees it)."""

    def __init__(
        self,
        pool: shoal.Pool,
        workers: Callable[[shoal.Pool], list[int]],
        *,
        every: tuple[float, float] = (0.05, 0.3),
        stop_share: float = 0.2,
    ) -> None:
        self.pool, self.workers, self.every, self.stop_share = pool, workers, every, stop_share
        self.count: Counter[str] = Counter()
        self._done = threading.Event()
        self._stopped: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="chaos-faults", daemon=True)

    def __enter__(self) -> Faults:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        rng = random.Random(7)
        while not self._done.wait(rng.uniform(*self.every)):
            try:
                pids = [p for p in self.workers(self.pool) if p not in self._stopped]
            except Exception:
                continue  # (a cluster between workers)
            if not pids:
                continue
            pid = rng.choice(pids)
            stop = rng.random() < self.stop_share
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP if stop else signal.SIGKILL)
                self.count["SIGSTOP" if stop else "SIGKILL"] += 1
                if stop:
                    self._stopped.add(pid)


@dataclass
class Holdings:
    """What this program holds: descriptors, threads, child processes, resident memory."""

    fds: set[str]
    threads: set[str]
    children: set[int]
    rss_mb: float

    @classmethod
    def now(cls) -> Holdings:
        fds = set()
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                fds.add(f"{name} -> {os.readlink(f'/proc/self/fd/{name}')}")
        return cls(fds, running_threads(), set(descendants(os.getpid())), rss_mb())

    def gained_since(self, before: Holdings, within: float = 10.0) -> list[str]:
        """What this program holds now and did not hold at ``before``, after waiting up to
        ``within`` seconds for things on their way out."""
        # What only reference cycles still hold is the program's no longer.
        gc.collect()

        def gained() -> list[str]:
            now = Holdings.now()
            found = [f"descriptor {fd}" for fd in sorted(now.fds - before.fds)]
            found += [f"thread {t}" for t in sorted(now.threads - before.threads)]
            found += [
                f"process {p} ({_cmdline(p)[:80]})" for p in sorted(now.children - before.children)
            ]
            return found

        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not gained(), "what was gained to be let go", within, interval=0.1)
        return gained()


def running_threads() -> set[str]:
    """The threads running in this program, as the kernel lists them: Python's own by name,
    the others (the engine's, a cluster client's) by what the kernel calls them."""
    # threading.enumerate() alone would miss threads Python never ran, and on Python 3.11
    # and 3.12 it keeps forever a "Dummy" entry for a foreign thread that once called into
    # Python (a Ray callback thread), long after that thread ended.
    by_id = {thread.native_id: thread.name for thread in threading.enumerate()}
    running = set()
    for task in os.listdir("/proc/self/task"):
        name = by_id.get(int(task))
        if name is None:
            name = f"{_read(f'/proc/self/task/{task}/comm').strip()}, not a Python thread"
        running.add(f"{name} ({task})")
    return running


def _read(path: str) -> str:
    """A file of /proc's, or "" once what it describes has gone."""
    try:
        with open(path, errors="replace") as file:
            return file.read()
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    """The live processes descending from ``root``."""
    parents: dict[int, list[int]] = {}
    for pid, (parent, _) in live_processes().items():
        parents.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()


def rss_mb() -> float:
    """This program's resident memory, in MiB."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
