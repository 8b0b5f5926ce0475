"""The process backend: every kind of callable under every start method, what only
processes have (pickling errors, dead workers, big messages), and scripts run the way
users run them (no ``__main__`` guard, an interactive session)."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import programs
import pytest
from pool_workers import Scaler, square
from waiting import wait_for

import shoal
from shoal._process.launch import START_METHODS


@pytest.fixture
def pool(pool_start_method: str) -> Iterator[shoal.Pool]:
    """A two-process pool started by each start method."""
    with shoal.Pool(2, start_method=pool_start_method) as pool:
        yield pool


class Point:
    """A class defined in a test module, with methods of every kind."""

    def __init__(self, x: int) -> None:
        self.x = x

    def shifted(self, dx: int) -> int:
        return self.x + dx

    @staticmethod
    def double(v: int) -> int:
        return 2 * v

    @classmethod
    def named(cls, v: int) -> str:
        return f"{cls.__name__}({v})"

    def __call__(self, v: int) -> int:
        return self.x * v


def _callables() -> dict[str, tuple[Callable[[int], Any], Callable[[int], Any]]]:
    """Name -> (callable to send, what it should compute here)."""
    offset = 7

    def nested(v: int) -> int:
        return v + offset

    def make_closure(k: int) -> Callable[[int], int]:
        return lambda v: v * k

    point = Point(3)
    local_class = type("Local", (), {"twice": lambda self, v: 2 * v})()
    kinds: dict[str, Callable[[int], Any]] = {
        "lambda": lambda v: v - 1,
        "closure": make_closure(5),
        "nested function": nested,
        "bound method": point.shifted,
        "static method": Point.double,
        "class method": Point.named,
        "partial": functools.partial(pow, 2),
        "callable instance": point,
        "module function": square,
        "builtin": abs,
        "method of an importable class": Scaler(4).scale,
        "method of a local class": local_class.twice,
    }
    return {name: (fn, fn) for name, fn in kinds.items()}


@pytest.mark.parametrize("kind", sorted(_callables()))
def test_every_kind_of_callable_runs_in_worker_processes(pool: shoal.Pool, kind: str) -> None:
    fn, expected = _callables()[kind]
    items = list(range(-3, 9))
    assert pool.map(fn, items) == [expected(v) for v in items]
    assert pool.apply(fn, (5,)) == expected(5)
    assert pool.submit(fn, 6).result(30) == expected(6)
    assert sorted(map(str, pool.imap_unordered(fn, items))) == sorted(
        str(expected(v)) for v in items
    )


def _pid_after_a_nap(_: object) -> int:
    time.sleep(0.05)
    return os.getpid()


def test_tasks_run_in_other_processes(pool: shoal.Pool) -> None:
    pids = set(pool.map(_pid_after_a_nap, range(8), chunksize=1))
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_workers_start_with_the_parents_path_and_directory(
    pool: shoal.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pool.apply(os.getcwd) == os.getcwd()
    (tmp_path / "only_here.py").write_text("def answer(x):\n    return x + 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # A new pool sees the path as it is now; the module goes by reference.
    with shoal.Pool(1, start_method=pool_method(pool)) as fresh:
        import only_here  # type: ignore[import-not-found]

        assert fresh.map(only_here.answer, [1, 2]) == [43, 44]


def pool_method(pool: shoal.Pool) -> str:
    method: str = pool._core.backend._method  # type: ignore[attr-defined]
    return method


def test_an_unpicklable_function_names_the_culprit(pool: shoal.Pool) -> None:
    class Holder:
        def __init__(self) -> None:
            self.conn = socket.socket()

        def fetch(self, x: int) -> int:
            return x

    holder = Holder()
    try:
        with pytest.raises(shoal.PicklingError) as info:
            pool.map(holder.fetch, [1, 2])
        assert info.value.path == "obj.__self__.conn"
        assert info.value.culprit_type == "socket.socket"
        assert 'backend="thread"' in str(info.value)
        # The pool is still fine.
        assert pool.map(square, [3]) == [9]
    finally:
        holder.conn.close()


def test_an_unpicklable_argument_fails_its_call_only(pool: shoal.Pool) -> None:
    lock = __import__("threading").Lock()
    with pytest.raises(shoal.PicklingError, match=r"_thread\.lock"):
        pool.apply(str, (lock,))
    assert pool.apply(str, (1,)) == "1"


def test_an_unpicklable_result_or_exception_becomes_an_error(pool: shoal.Pool) -> None:
    from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]

    with pytest.raises(shoal.ResultNotSentError, match="could not be sent back") as caught:
        pool.apply(lambda: __import__("threading").Lock())
    assert isinstance(caught.value, MaybeEncodingError)
    assert "_thread.lock" in caught.value.value

    def raise_unpicklable() -> None:
        error = ValueError("bad")
        error.lock = __import__("threading").Lock()  # type: ignore[attr-defined]
        raise error

    with pytest.raises(shoal.ShoalError, match="raised ValueError: bad"):
        pool.apply(raise_unpicklable)
    assert pool.map(square, [2, 3]) == [4, 9]


def test_a_task_raising_system_exit_fails_only_itself(pool: shoal.Pool) -> None:
    with pytest.raises(SystemExit):
        pool.apply(sys.exit, (3,))
    assert pool.apply(square, (4,)) == 16


def test_messages_larger_than_the_rings_pass_in_pieces(pool: shoal.Pool) -> None:
    from shoal.backends.process import RING_CAPACITY

    big = os.urandom(RING_CAPACITY * 2 + 12345)
    assert pool.apply(len, (big,)) == len(big)
    back = pool.apply(lambda b: b[::-1], (big,))
    assert back == big[::-1]


def test_a_killed_worker_fails_its_task_and_the_pool_goes_on(pool: shoal.Pool) -> None:
    victim = pool.apply_async(lambda: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(shoal.WorkerLostError) as info:
        victim.get(30)
    assert info.value.signal in (None, signal.SIGKILL)
    assert "died while running this task" in str(info.value)
    assert pool.map(square, range(20)) == [x * x for x in range(20)]


def test_initializer_gets_a_queue_in_initargs(pool_start_method: str) -> None:
    queue: shoal.Queue[int] = shoal.Queue()

    def hello(q: shoal.Queue[int]) -> None:
        q.put(os.getpid())

    with shoal.Pool(2, hello, (queue,), start_method=pool_start_method) as pool:
        pids = {queue.get(timeout=30), queue.get(timeout=30)}
        assert pool.apply(os.getpid) in pids


def test_an_unknown_start_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown start method 'forkserver'"):
        shoal.Pool(1, start_method="forkserver")


@pytest.mark.parametrize("inner_method", START_METHODS)
def test_a_task_can_run_its_own_pool(pool: shoal.Pool, inner_method: str) -> None:
    # No "daemonic processes are not allowed to have children", whichever way either
    # pool starts its workers.
    def inner(n: int) -> tuple[list[int], bool]:
        with shoal.Pool(2, start_method=inner_method) as nested:
            values = nested.map(lambda x: x * n, range(3))
            elsewhere = os.getpid() not in nested.map(lambda _: os.getpid(), range(2))
            return values, elsewhere

    assert pool.map(inner, [1, 2]) == [([0, 1, 2], True), ([0, 2, 4], True)]


SCRIPT = """
import shoal

class Accumulator:
    def __init__(self, start):
        self.start = start

    def add(self, x):
        return self.start + x

def plain(x):
    return x * 3

result = []
with shoal.Pool(2, start_method={method!r}) as pool:
    result.append(pool.map(plain, range(4)))
    result.append(pool.map(Accumulator(100).add, range(3)))
    result.append(pool.map(lambda x: Accumulator(x), range(2))[1].start)
    result.append(pool.apply(type, (Accumulator(1),)) is Accumulator)
print(result)
"""
EXPECTED = "[[0, 3, 6, 9], [100, 101, 102], 1, True]"


def _python(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return programs.run([sys.executable, *args], input=stdin, timeout=120)


def test_a_script_without_a_main_guard(pool_start_method: str, tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.format(method=pool_start_method))
    done = _python([str(script)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == EXPECTED


def test_code_typed_into_an_interactive_session(pool_start_method: str) -> None:
    # Blank lines end the blocks, as at the prompt.
    session = textwrap.dedent(SCRIPT.format(method=pool_start_method)).replace("\n\n", "\n")
    session = session.replace("\ndef plain", "\n\ndef plain").replace("\nresult", "\n\nresult")
    session = session.replace("\nprint", "\n\nprint") + "\n"
    done = _python(["-i", "-q"], stdin=session)
    assert done.returncode == 0, done.stderr
    assert EXPECTED in done.stdout


def test_a_new_zygote_replaces_one_that_died() -> None:
    from shoal._process.zygote import shared_zygote

    with shoal.Pool(1) as pool:
        assert pool.apply(abs, (-1,)) == 1
    old = shared_zygote()
    os.kill(old.pid, signal.SIGKILL)
    wait_for(lambda: not old.alive(), "the killed zygote to be seen dead", 10)
    with shoal.Pool(2) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
    assert shared_zygote().pid != old.pid


def _touch(path: str) -> str:
    Path(path).touch()
    return path


def _touch_then_sleep(path: str, seconds: float) -> None:
    Path(path).touch()
    time.sleep(seconds)


def test_a_cancelled_future_never_runs_and_a_running_one_cannot_be_cancelled(
    tmp_path: Path,
) -> None:
    from concurrent.futures import CancelledError, as_completed, wait

    with shoal.Pool(1) as pool:
        started = tmp_path / "started"
        running = pool.submit(_touch_then_sleep, str(started), 1.0)
        wait_for(started.exists, "the worker to start the task")
        # Queued behind it: in the engine's queue, given to no worker yet.
        queued = [pool.submit(_touch, str(tmp_path / f"ran-{i}")) for i in range(100)]
        assert queued[-1].cancel()
        assert queued[-2].cancel()
        assert queued[-1].cancelled()
        assert not queued[-1].running()
        assert not running.cancel(), "a running task cannot be taken back"
        assert running.running()
        with pytest.raises(CancelledError):
            queued[-1].result(timeout=30)
        done, not_done = wait(queued[:-2], timeout=60)
        assert not not_done
        assert all(f.result() for f in done)
        assert len(list(as_completed(queued[:-2], timeout=60))) == 98
        assert running.result(timeout=30) is None
        assert not queued[0].cancel(), "a finished task cannot be cancelled"
    ran = sorted(p.name for p in tmp_path.glob("ran-*"))
    assert len(ran) == 98
    assert "ran-98" not in ran
    assert "ran-99" not in ran


def test_prefetch_one_keeps_quick_tasks_from_waiting_behind_a_slow_one(
    pool_start_method: str,
) -> None:
    with shoal.Pool(2, start_method=pool_start_method, prefetch=1) as pool:
        pool.map(square, range(200))  # chunks measured as tiny: an adaptive pool queues deep
        slow = pool.apply_async(time.sleep, (3.0,))
        quick = [pool.apply_async(square, (n,)) for n in range(40)]
        assert [r.get(timeout=2.5) for r in quick] == [n * n for n in range(40)]
        assert not slow.ready()


@pytest.mark.parametrize("prefetch", [0, -1, 1.5, True])
def test_prefetch_must_be_a_positive_int(prefetch: object) -> None:
    with pytest.raises(ValueError, match="prefetch must be a positive int or None"):
        shoal.Pool(1, prefetch=prefetch)
