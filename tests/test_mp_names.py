"""``import shoal as multiprocessing`` carries a whole program: multiprocessing's other
names (Process, Manager, Pipe, contexts, start methods...) work together with shoal's
Pool and queues, and a name shoal lacks says where to find it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

import shoal
import shoal.dummy
import shoal.pool
from scripts import run_script

PROGRAM = """
import os
import shoal as multiprocessing
from shoal.pool import ThreadPool

multiprocessing.set_start_method(START, force=True)

def consume(jobs, results):
    while True:
        item = jobs.get(timeout=30)
        if item is not None:
            results.put(item * 2)
        jobs.task_done()
        if item is None:
            break

def record(shared, x):
    shared[x] = multiprocessing.current_process().name
    return x

def answer(conn):
    conn.send(multiprocessing.parent_process().pid)
    conn.close()

def square(x):
    return x * x

# multiprocessing's Process still needs the guard under spawn and forkserver; the Pool never.
if __name__ == "__main__":
    jobs, results = multiprocessing.JoinableQueue(), multiprocessing.SimpleQueue()
    consumers = [multiprocessing.Process(target=consume, args=(jobs, results)) for _ in range(2)]
    for consumer in consumers:
        consumer.start()
    jobs.put_many(range(10))
    for _ in consumers:
        jobs.put(None)
    assert jobs.join(timeout=60)
    assert sorted(results.get() for _ in range(10)) == [2 * i for i in range(10)]
    for consumer in consumers:
        consumer.join(30)
        assert consumer.exitcode == 0, consumer.exitcode

    with multiprocessing.Manager() as manager:
        shared = manager.dict()
        with multiprocessing.Pool(2) as pool:
            assert pool.starmap(record, [(shared, i) for i in range(4)]) == [0, 1, 2, 3]
        names = dict(shared)
    assert sorted(names) == [0, 1, 2, 3], names
    # Named as multiprocessing names the pool workers of that start method.
    kind = {"fork": "Fork", "spawn": "Spawn", "forkserver": "ForkServer"}[START]
    assert all(name.startswith(f"{kind}PoolWorker-") for name in names.values()), names

    mine, theirs = multiprocessing.Pipe()
    child = multiprocessing.Process(target=answer, args=(theirs,))
    child.start()
    assert mine.recv() == os.getpid()
    child.join(30)

    with multiprocessing.get_context(START).Pool(1) as pool:
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
    with ThreadPool(2) as pool:
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
    assert multiprocessing.get_start_method() == START
    print("ok", multiprocessing.current_process().name)
"""


def test_a_multiprocessing_program_runs_on_shoal(tmp_path: Path, start_method: str) -> None:
    assert run_script(PROGRAM, tmp_path, start_method).stdout.split() == ["ok", "MainProcess"]


def test_every_multiprocessing_name_is_offered() -> None:
    assert [name for name in multiprocessing.__all__ if not hasattr(shoal, name)] == []
    dummy = __import__("multiprocessing.dummy").dummy
    assert [name for name in dummy.__all__ if not hasattr(shoal.dummy, name)] == []
    assert issubclass(shoal.Process, multiprocessing.process.BaseProcess)
    assert issubclass(shoal.managers.BaseManager, multiprocessing.managers.BaseManager)
    assert shoal.pool.ApplyResult is shoal.AsyncResult
    assert set(shoal.__all__) >= set(multiprocessing.__all__)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("ThreadPool", "it is shoal.pool.ThreadPool"),
        ("BaseManager", "it is shoal.managers.BaseManager"),
        ("Listener", "it is shoal.connection.Listener"),
    ],
)
def test_a_missing_name_says_where_it_is(name: str, hint: str) -> None:
    with pytest.raises(AttributeError, match=hint):
        getattr(shoal, name)


def test_contexts_map_start_methods_to_the_pool() -> None:
    assert shoal.get_context("forkserver").get_start_method() == "forkserver"
    with pytest.raises(ValueError, match="cannot find context for 'zygote'"):
        shoal.get_context("zygote")
    assert type(shoal.get_context("spawn").SimpleQueue()) is shoal.SimpleQueue


SUBMODULES = """
import importlib, pkgutil, sys
import multiprocessing
import shoal

# Every submodule a program imports as multiprocessing.X imports as shoal.X, with shoal's
# objects where shoal has its own and multiprocessing's everywhere else.
from shoal.shared_memory import SharedMemory, ShareableList
from shoal.managers import BaseManager, SyncManager, BaseProxy
from shoal.connection import Client, Listener, Connection, wait
from shoal.synchronize import Lock, Barrier
from shoal.sharedctypes import Value, synchronized
from shoal.queues import Queue, JoinableQueue
from shoal.util import Finalize, get_logger
from shoal.pool import Pool, ThreadPool, ApplyResult
from shoal.dummy import Pool as DummyPool
from shoal.dummy.connection import Pipe
from shoal.context import BaseContext
from shoal.process import current_process, BaseProcess
from shoal.reduction import ForkingPickler
from shoal.heap import BufferWrapper
import shoal.resource_tracker, shoal.spawn, shoal.forkserver, shoal.resource_sharer

assert Lock is shoal.Lock and Barrier is shoal.Barrier and Value is shoal.Value
assert Queue is shoal.Queue and JoinableQueue is shoal.JoinableQueue and Pool is shoal.Pool
assert SharedMemory is multiprocessing.shared_memory.SharedMemory
import multiprocessing.connection
assert Connection is multiprocessing.connection.Connection
missing = [
    m.name
    for m in pkgutil.iter_modules(multiprocessing.__path__)
    if not m.name.startswith("popen_") and importlib.util.find_spec(f"shoal.{m.name}") is None
]
assert missing == [], missing
with shoal.Pool(2) as pool:
    print(pool.map(abs, [-1, -2]), type(shoal.synchronize.RLock()).__module__)
try:
    shoal.connection.NoSuchName
except AttributeError as exc:
    print(exc)
"""


def test_every_submodule_imports_from_shoal(tmp_path: Path) -> None:
    done = run_script(SUBMODULES, tmp_path, "unused")
    assert done.stdout.splitlines() == [
        "[1, 2] shoal._mp.locks",
        "module 'shoal.connection' has no attribute 'NoSuchName'",
    ]
