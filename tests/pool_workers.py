"""Functions and classes the Pool tests run as tasks; importable by name, so any backend
(threads or processes) can run them."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from waiting import wait_for

BACKENDS = ["thread", "process", "docs-example", "dask-session", "ray-session"]
"""Every backend the Pool tests run on ("docs-example": docs/backends.md's example)."""

KEEPS_ITS_WORKERS = {
    "docs-example": "the docs' example backend has no maxtasksperchild",
    "dask-session": "a pool does not own a Dask cluster's workers: no maxtasksperchild",
}
"""Backends that refuse maxtasksperchild, and why."""

OWN_WORKERS = ["process", "thread"]
"""The backends whose workers the pool starts and owns (their lives, exits and state are
the pool's to report)."""

_local = threading.local()


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def fail_on(x: int, bad: int = 0) -> int:
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def divide_by(x: int) -> float:
    return 1 / x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def remember(value: Any) -> None:
    """An initializer: stores ``value`` and a fresh token for this worker."""
    _local.value = value
    _local.token = uuid.uuid4().hex


def recall(_: object = None) -> tuple[Any, str]:
    """What this worker's initializer stored, and its token (unique per worker life)."""
    return _local.value, _local.token


def raise_from(x: int) -> int:
    try:
        raise KeyError(x)
    except KeyError as exc:
        raise RuntimeError("wrapped") from exc


def broken_initializer() -> None:
    raise OSError("cannot open the model")


class Scaler:
    """Bound, static and class methods and a callable instance, as tasks."""

    factor = 3

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scale(self, x: int) -> int:
        return x * self.factor

    @staticmethod
    def negate(x: int) -> int:
        return -x

    @classmethod
    def scale_by_class(cls, x: int) -> int:
        return x * cls.factor

    def __call__(self, x: int) -> int:
        return x + self.factor


def wait_for_file(path: str, value: Any = True, timeout: float = 30.0) -> Any:
    """Returns ``value`` once ``path`` exists: a gate that a test opens from outside the
    worker, whatever process the worker is."""
    wait_for(lambda: os.path.exists(path), f"{path} to appear", timeout, interval=0.002)
    return value


def fail_while_one_runs(x: int, folder: str) -> int:
    """Item 0 raises ``ValueError`` once item 1 is running; every other item marks that
    it runs, then returns ``x`` once ``folder/open`` exists. On two workers, a map's
    failure so arrives while chunks of it are still out, and they finish when the test
    says."""
    if x == 0:
        wait_for_file(os.path.join(folder, "running-1"))
        raise ValueError("bad item 0")
    with open(os.path.join(folder, f"running-{x}"), "x"):
        pass
    wait_for_file(os.path.join(folder, "open"))
    return x


def meet(folder: str, count: int = 2) -> int:
    """Returns this worker's pid once ``count`` tasks are inside this call at the same
    time (each marks its arrival in ``folder``): on a pool of ``count`` workers, one task
    each, so that every worker answers."""
    with open(os.path.join(folder, uuid.uuid4().hex), "x"):
        pass
    wait_for(lambda: len(os.listdir(folder)) >= count, f"{count} tasks to meet in {folder}")
    return os.getpid()


def die(_: object = None) -> None:
    """Kills the worker running it (SIGKILL): the task never returns."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def worker_name(_: object = None) -> str:
    """The name multiprocessing's ``current_process()`` gives the worker running this."""
    import multiprocessing

    return multiprocessing.current_process().name
