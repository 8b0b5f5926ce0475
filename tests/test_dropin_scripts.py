"""Programs shaped like the ones people copy, with only the import changed to shoal:
initializer globals, workers that know they are workers, tracebacks into the script.
Each runs as a file under every start method."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from scripts import pool_worker_prefix, run_script


def test_globals_set_by_an_initializer_are_seen_by_tasks(
    tmp_path: Path, pool_start_method: str
) -> None:
    done = run_script(
        """
        import json
        import shoal

        MODEL = None  # the stale value a task must not see
        CALLS = 0

        def load(scale):
            global MODEL
            MODEL = {"scale": scale}

        def helper(x):
            global CALLS
            CALLS += 1
            return x * MODEL["scale"]

        class Scorer:
            def score(self, x):
                return helper(x) + 1

        def task(x):
            return Scorer().score(x), CALLS

        def calls(_):
            return CALLS

        with shoal.Pool(1, initializer=load, initargs=(10,), start_method=START) as pool:
            first = pool.map(task, [1, 2, 3])
            # A function sent later, with the parent's CALLS = 0, sees the worker's count.
            later = pool.apply(calls, (None,))
        print(json.dumps([first, later]))
        """,
        tmp_path,
        pool_start_method,
    )
    first, later = json.loads(done.stdout)
    assert first == [[11, 1], [21, 2], [31, 3]]
    assert later == 3


def test_workers_know_they_are_workers(tmp_path: Path, pool_start_method: str) -> None:
    done = run_script(
        """
        import json, logging, os, sys
        import multiprocessing
        import shoal

        multiprocessing.log_to_stderr(logging.WARNING)

        def facts(_):
            import __main__
            me = multiprocessing.current_process()
            parent = multiprocessing.parent_process()
            multiprocessing.get_logger().warning("hello from %s", me.name)
            return {
                "name": me.name,
                "identity": list(me._identity),
                "parent": [parent.pid, parent.name, parent.is_alive()],
                "argv": sys.argv,
                "main_file": getattr(__main__, "__file__", None),
                "level": multiprocessing.get_logger().getEffectiveLevel(),
            }

        with shoal.Pool(2, start_method=START) as pool:
            seen = pool.map(facts, range(8), chunksize=1)
        print(json.dumps({"seen": seen, "pid": os.getpid(), "file": os.path.abspath(__file__)}))
        """,
        tmp_path,
        pool_start_method,
    )
    out = json.loads(done.stdout)
    names = {fact["name"] for fact in out["seen"]}
    prefix = pool_worker_prefix(pool_start_method)
    assert names <= {f"{prefix}-1", f"{prefix}-2"}
    assert names
    for fact in out["seen"]:
        number = int(fact["name"].rsplit("-", 1)[1])
        assert fact["identity"] == [number]
        assert fact["parent"] == [out["pid"], "MainProcess", True]
        assert fact["argv"] == ["program.py"]
        assert fact["main_file"] == out["file"]
        assert fact["level"] == 30
    assert f"hello from {prefix}-" in done.stderr


def test_a_worker_traceback_shows_the_script_line(tmp_path: Path, pool_start_method: str) -> None:
    done = run_script(
        """
        import inspect, linecache
        import multiprocessing.pool
        import shoal

        def fails(x):
            raise RuntimeError(x)  # the line the user wrote

        def source(_):
            return inspect.getsource(fails)

        with shoal.Pool(1, start_method=START) as pool:
            try:
                pool.apply(fails, (123,))
            except RuntimeError as exc:
                cause = exc.__cause__
                assert type(cause) is multiprocessing.pool.RemoteTraceback, type(cause)
                print(cause.tb)
            print(pool.apply(source, (None,)))
        """,
        tmp_path,
        pool_start_method,
    )
    assert 'program.py", line 8, in fails' in done.stdout
    assert "raise RuntimeError(x)  # the line the user wrote" in done.stdout
    assert "def fails(x):" in done.stdout
    # The worker's own frames are not the user's business.
    assert "shoal/_process/worker.py" not in done.stdout


def test_a_shoal_lock_in_initargs_guards_a_shared_count(
    tmp_path: Path, pool_start_method: str
) -> None:
    done = run_script(
        """
        import shoal

        def init(lock, count):
            global LOCK, COUNT
            LOCK, COUNT = lock, count

        def task(x):
            with LOCK:
                for _ in range(50):  # a read and a write each: a lost update shows
                    COUNT.value += 1
                return x

        lock, count = shoal.Lock(), shoal.RawValue("i", 0)
        initargs = (lock, count)
        with shoal.Pool(2, initializer=init, initargs=initargs, start_method=START) as pool:
            print(sum(pool.map(task, range(100), chunksize=3)))
            print(count.value)
        print(lock.acquire(timeout=5))
        """,
        tmp_path,
        pool_start_method,
    )
    assert done.stdout.split() == ["4950", "5000", "True"]


# PyMOTW's and the logging cookbook's shape: workers say who they are. Run once on
# multiprocessing and once with the imports changed; the names must be the same.
_WHO_AM_I = """
import json
import threading
import time
import {mp} as multiprocessing
from {cf} import ProcessPoolExecutor, ThreadPoolExecutor
from {mp}.pool import ThreadPool

def who(_):
    time.sleep(0.02)  # long enough that every worker takes some
    return multiprocessing.current_process().name

def thread_who(_):
    time.sleep(0.02)
    return threading.current_thread().name

if __name__ == "__main__":
    if {method!r} is not None:
        multiprocessing.set_start_method({method!r})
    with multiprocessing.Pool(2) as pool:
        pool_names = sorted(set(pool.map(who, range(40), chunksize=1)))
    with ProcessPoolExecutor(2) as ex:
        executor_names = sorted({{n.rsplit("-", 1)[0] for n in ex.map(who, range(40))}})
    with ThreadPoolExecutor(2, thread_name_prefix="io") as ex:
        prefixed = sorted({{n.rsplit("_", 1)[0] for n in ex.map(thread_who, range(40))}})
    with ThreadPool(2) as pool:
        named = pool.map(thread_who, range(40), chunksize=1)
        threads = sorted({{n.split("-")[0] + n[n.index(" "):] for n in named}})
    print(json.dumps([pool_names, executor_names, prefixed, threads]))
"""


@pytest.mark.parametrize("method", [None, "fork", "spawn", "forkserver"])
def test_workers_are_named_as_multiprocessing_names_them(
    tmp_path: Path, method: str | None
) -> None:
    seen = []
    for mp, cf in (("multiprocessing", "concurrent.futures"), ("shoal", "shoal")):
        source = _WHO_AM_I.format(mp=mp, cf=cf, method=method)
        seen.append(json.loads(run_script(source, tmp_path, "unused").stdout))
    theirs, ours = seen
    assert ours == theirs
    kind = {"fork": "Fork", "spawn": "Spawn", "forkserver": "ForkServer"}
    default = multiprocessing.get_all_start_methods()[0]
    assert ours[0] == [f"{kind[method or default]}PoolWorker-{n}" for n in (1, 2)]
    assert ours[1:] == [[f"{kind[method or default]}Process"], ["io"], ["Thread (worker)"]]


# The classic shared-counter answer: a multiprocessing.Value bound under the guard,
# handed over by the initializer, read by the task as a global. Run on multiprocessing
# and with only the Pool changed to shoal's.
_COUNTER = """
from multiprocessing import Value
import multiprocessing
from {pool} import Pool

def init(args):
    global counter
    counter = args

def task(x):
    with counter.get_lock():
        counter.value += 1
    return x * x

def read_unset(_):
    return other.value  # set under the guard, never by an initializer

if __name__ == "__main__":
    if {method!r} is not None:
        multiprocessing.set_start_method({method!r})
    counter, other = Value("i", 0), Value("i", 7)
    with Pool(2, initializer=init, initargs=(counter,)) as pool:
        print(pool.map(task, range(10)))
        try:
            print(pool.apply(read_unset, (0,)))
        except NameError as exc:
            print("NameError:", exc)
            print(*getattr(exc, "__notes__", []), file=__import__("sys").stderr)
    print(counter.value)
"""


@pytest.mark.parametrize("method", [None, "fork", "spawn", "forkserver"])
def test_a_global_that_cannot_be_pickled_is_set_by_the_initializer(
    tmp_path: Path, method: str | None
) -> None:
    done = [
        run_script(_COUNTER.format(pool=pool, method=method), tmp_path, "unused")
        for pool in ("multiprocessing", "shoal")
    ]
    assert done[1].stdout == done[0].stdout
    lines = done[1].stdout.splitlines()
    assert lines[0] == str([x * x for x in range(10)])
    assert lines[-1] == "10"
    if "NameError" in done[1].stdout:  # (workers that did not fork from the program)
        assert "shoal left the global 'other' out of read_unset()" in done[1].stderr
        assert "set it in the pool's initializer" in done[1].stderr


def test_shared_memory_a_task_attaches_is_tracked_by_the_programs_tracker(
    tmp_path: Path, pool_start_method: str
) -> None:
    # One tracker for the program and its workers, as multiprocessing's children have:
    # a worker's own would unlink the block when the worker exits (maxtasksperchild=1
    # makes every task's worker a replacement), and the program's unlink() would fail.
    done = run_script(
        """
        from multiprocessing import shared_memory
        import shoal

        def total(name):
            block = shared_memory.SharedMemory(name=name)
            try:
                return sum(block.buf[:4])
            finally:
                block.close()

        block = shared_memory.SharedMemory(create=True, size=16)
        block.buf[:4] = bytes([1, 2, 3, 4])
        with shoal.Pool(2, maxtasksperchild=1, start_method=START) as pool:
            print(pool.map(total, [block.name] * 6, chunksize=1))
        block.close()
        block.unlink()
        print("unlinked")
        """,
        tmp_path,
        pool_start_method,
    )
    assert done.stdout.splitlines() == ["[10, 10, 10, 10, 10, 10]", "unlinked"]
    assert "resource_tracker" not in done.stderr, done.stderr


_CACHE = """
import time
import {mp} as multiprocessing

def slow(x):
    time.sleep(0.3)
    return x

if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        results = [pool.apply_async(slow, (i,)) for i in range(4)]
        print(len(pool._cache))
        while pool._cache:  # the idiom: wait until every call is answered
            time.sleep(0.01)
        print([r.get(0) for r in results])
"""


def test_a_program_waits_on_the_pools_cache(tmp_path: Path) -> None:
    outputs = [
        run_script(_CACHE.format(mp=mp), tmp_path, "unused").stdout
        for mp in ("multiprocessing", "shoal")
    ]
    assert outputs[1] == outputs[0] == "4\n[0, 1, 2, 3]\n"
