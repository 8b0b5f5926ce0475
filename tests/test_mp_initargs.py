"""multiprocessing's own synchronization objects, shared memory and queues in a shoal
Pool's ``initargs``, as programs written for multiprocessing pass them: every worker
(replacements included) shares them with the parent. Objects of the ``fork`` context
exist only in processes forked from their creator: a pool asked for no start method forks
its workers then; one asked to start them otherwise says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import run_script

CONTEXTS = ("fork", "spawn", "forkserver")

PROGRAM = """
import multiprocessing
import shoal

ctx = multiprocessing.get_context(CONTEXT)
lock, count, slots = ctx.Lock(), ctx.Value("i", 0), ctx.Array("d", 4)
queue, joinable, simple, event = ctx.Queue(), ctx.JoinableQueue(), ctx.SimpleQueue(), ctx.Event()
raw = ctx.RawValue("i", 0)
condition, semaphore = ctx.Condition(), ctx.BoundedSemaphore(2)

def init(*shared):
    global LOCK, COUNT, SLOTS, QUEUE, JOINABLE, SIMPLE, EVENT, RAW, CONDITION, SEMAPHORE
    LOCK, COUNT, SLOTS, QUEUE, JOINABLE, SIMPLE, EVENT, RAW, CONDITION, SEMAPHORE = shared

def task(x):
    with LOCK:
        COUNT.value += 1
        RAW.value += 1
    with SLOTS.get_lock():
        SLOTS[x % 4] += 1.0
    with SEMAPHORE, CONDITION:
        CONDITION.notify_all()
    QUEUE.put(x)
    JOINABLE.put(x)
    SIMPLE.put(x)
    EVENT.set()
    return multiprocessing.current_process().pid

shared = (lock, count, slots, queue, joinable, simple, event, raw, condition, semaphore)
method = None if START == "default" else START
# Two tasks per worker: the replacements must find the objects too. close() and join(),
# not terminate(): a worker's queue flushes its last items as the worker leaves.
pool = shoal.Pool(2, initializer=init, initargs=shared, maxtasksperchild=2, start_method=method)
pids = pool.map(task, range(12), chunksize=1)
pool.close()
pool.join()
assert len(set(pids)) >= 6, pids
assert count.value == 12 and raw.value == 12, (count.value, raw.value)
assert list(slots) == [3.0, 3.0, 3.0, 3.0], list(slots)
assert sorted(queue.get(timeout=10) for _ in range(12)) == list(range(12))
got = []
for _ in range(12):
    got.append(joinable.get(timeout=10))
    joinable.task_done()
joinable.join()
assert sorted(got) == list(range(12))
assert sorted(simple.get() for _ in range(12)) == list(range(12))
assert event.is_set()
print("shared", pids[0] != multiprocessing.current_process().pid)
"""


REFUSED = """
import multiprocessing
import shoal

def init(lock):
    pass

try:
    shoal.Pool(1, initializer=init, initargs=(multiprocessing.get_context("fork").Lock(),),
               start_method=START)
except shoal.ShoalError as exc:
    assert "start_method='fork'" in str(exc) and "get_context('spawn').Lock" in str(exc), exc
    print("refused")
"""


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("method", ["default", "zygote", "spawn", "fork"])
def test_multiprocessing_objects_in_initargs(tmp_path: Path, context: str, method: str) -> None:
    if context == "fork" and method in ("zygote", "spawn"):
        pytest.skip("objects of the fork context cannot reach these workers (next test)")
    source = f"CONTEXT = {context!r}\n" + PROGRAM
    assert run_script(source, tmp_path, method).stdout.split() == ["shared", "True"]


@pytest.mark.parametrize("method", ["zygote", "spawn"])
def test_fork_only_objects_are_refused_by_other_start_methods(tmp_path: Path, method: str) -> None:
    assert run_script(REFUSED, tmp_path, method).stdout.split() == ["refused"]


THREADED = """
import multiprocessing, sys, threading, warnings
import shoal

warnings.simplefilter("always")  # (DeprecationWarnings from a library are hidden by default)
stop = threading.Event()
busy = threading.Thread(target=stop.wait, name="user-thread")
busy.start()

def init(lock):
    global LOCK
    LOCK = lock

def task(n):
    with LOCK:
        return n * 2

lock = multiprocessing.get_context("fork").RLock()
with warnings.catch_warnings(record=True) as caught:
    with shoal.Pool(2, initializer=init, initargs=(lock,)) as pool:
        print(pool.map(task, range(4)))
stop.set()
said = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
# As multiprocessing warns (fork() does, from Python 3.12 on), once per fork.
expected = 2 if sys.version_info >= (3, 12) else 0
assert len(said) == expected and all("multi-threaded" in m for m in said), said
print("forked")
"""


def test_fork_only_objects_with_threads_running_fork_and_warn_as_multiprocessing(
    tmp_path: Path,
) -> None:
    assert run_script(THREADED, tmp_path, "zygote").stdout.split() == [
        "[0,",
        "2,",
        "4,",
        "6]",
        "forked",
    ]
