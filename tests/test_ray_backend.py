"""backend="ray" on a real Ray: a program as users write it (script-level functions, no
guard) on the local Ray the pool starts and stops, a cluster the program did not start
(``address=`` and ``RAY_ADDRESS``), a Ray worker killed mid-task, retries, task_timeout's
force-cancel, terminate, and the errors for what cannot be reached or is not installed.
The Pool's behaviour suite runs on the session's Ray too ("ray-session" in
pool_workers.BACKENDS)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from waiting import wait_for

import shoal
from scripts import run_script

pytest.importorskip("ray")

PROGRAM = """
import ray
import shoal
from helper import triple

def init(offset):
    global OFFSET
    OFFSET = offset

def task(x):
    return OFFSET + triple(x)

with shoal.Pool(2, initializer=init, initargs=(100,), backend="ray") as pool:
    assert pool.map(task, range(10)) == [100 + 3 * x for x in range(10)]
    assert sorted(pool.imap_unordered(lambda x: -x, range(5))) == [-4, -3, -2, -1, 0]
    try:
        pool.apply(lambda: 1 / 0)
    except ZeroDivisionError as exc:
        assert "1 / 0" in str(exc.__cause__)
    else:
        raise AssertionError("no error")
    # A shoal.shared object a function closes over (the pool's own Ray, as a user gets it).
    import numpy as np
    table = shoal.shared(np.arange(100_000, dtype=np.float64))
    read = pool.map_async(lambda i: float(table.value[i * 1000]), range(10)).get(timeout=60)
    assert read == [i * 1000.0 for i in range(10)]
    assert ray.is_initialized()
assert not ray.is_initialized(), "the local Ray the pool started outlived it"

ray.init(num_cpus=1, include_dashboard=False)  # a program's own Ray is left as it is
with shoal.Pool(backend="ray") as pool:
    assert pool.map(abs, [-1, -2]) == [1, 2]
assert ray.is_initialized()
print("ok")
"""


def test_a_script_runs_on_the_local_ray_the_pool_starts(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("def triple(x):\n    return 3 * x\n")
    assert "ok" in run_script(PROGRAM, tmp_path, "zygote").stdout


HEAD = """
import sys, ray
ray.init(num_cpus=1, include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
"""

CLIENT = """
import os, ray, shoal
address = os.environ.pop("HEAD")
with shoal.Pool(backend="ray", address=address) as pool:
    assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
assert not ray.is_initialized()
os.environ["RAY_ADDRESS"] = address
with shoal.Pool(backend="ray") as pool:  # the cluster is still there
    assert pool._processes == 1 and pool.apply(abs, (-4,)) == 4
print("ok")
"""


def test_a_running_cluster_by_address_and_by_ray_address(tmp_path: Path) -> None:
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        # A local Ray asks for a token (which it keeps in ~/.ray) from other programs.
        os.environ.update(HEAD=address, RAY_AUTH_MODE="token")
        try:
            assert "ok" in run_script(CLIENT, tmp_path, "zygote").stdout
        finally:
            del os.environ["HEAD"], os.environ["RAY_AUTH_MODE"]
    finally:
        head.communicate("", timeout=60)


def _pid_then_wait(path: str) -> int:
    with open(path, "w") as file:
        file.write(str(os.getpid()))
    time.sleep(60)
    return os.getpid()


def _written_pid(path: Path) -> int:
    def pid() -> int | None:
        text = path.read_text() if path.exists() else ""
        return int(text) if text else None

    return wait_for(pid, f"the task's pid in {path}", 60)


@pytest.mark.parametrize("retries", [0, 1])
def test_a_ray_worker_killed_mid_task_costs_that_task_only(tmp_path: Path, retries: int) -> None:
    flag = tmp_path / "pid"
    with shoal.Pool(backend="ray-session", retries=retries) as pool:
        doomed = pool.apply_async(_pid_then_wait, (str(flag),))
        killed = _written_pid(flag)
        os.kill(killed, signal.SIGKILL)
        if retries:
            flag.write_text("")  # it runs again in a new worker, which writes its pid
            killed_again = _written_pid(flag)
            assert killed_again != killed
            os.kill(killed_again, signal.SIGKILL)
            killed = killed_again
        with pytest.raises(shoal.WorkerLostError, match="Ray worker on node") as lost:
            doomed.get(timeout=60)
        assert lost.value.pid == killed
        assert pool.map(abs, [-1, -2], chunksize=1) == [1, 2]  # the pool goes on


def test_task_timeout_force_cancels_that_task_only(tmp_path: Path) -> None:
    flag = tmp_path / "pid"
    # 5 s: the limit counts from the task's start in its Ray worker, and a cold worker on
    # a loaded machine may take a second or more to reach the function's first line.
    with shoal.Pool(backend="ray-session", task_timeout=5) as pool:
        started = time.monotonic()
        with pytest.raises(shoal.TaskTimeoutError) as late:
            pool.apply(_pid_then_wait, (str(flag),))
        assert time.monotonic() - started < 30
        assert late.value.pid == _written_pid(flag)
        assert pool.map(abs, [-1, -2], chunksize=1) == [1, 2]
    assert not psutil.pid_exists(late.value.pid) or _ended_soon(late.value.pid)


def _ended_soon(pid: int) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(30)
    return not psutil.pid_exists(pid)


def test_terminate_stops_the_tasks_the_pool_has_on_ray(tmp_path: Path) -> None:
    flag = tmp_path / "pid"
    pool = shoal.Pool(backend="ray-session")
    running = pool.apply_async(_pid_then_wait, (str(flag),))
    pid = _written_pid(flag)
    pool.terminate()
    pool.join()
    assert _ended_soon(pid)
    with pytest.raises(Exception):  # noqa: B017, PT011 (whatever a terminated pool's result says)
        running.get(timeout=10)


def test_what_cannot_be_reached_or_used_is_said_plainly() -> None:
    with pytest.raises(shoal.ShoalError, match=r"already connected .* not '127\.0\.0\.1:9'"):
        shoal.Pool(backend="ray", address="127.0.0.1:9")
    with pytest.raises(TypeError, match="the ray backend takes no option 'client'"):
        shoal.Pool(1, backend="ray", client=None)
    script = textwrap.dedent(
        """
        import sys
        import shoal
        try:
            shoal.Pool(backend="ray", address="127.0.0.1:9")
        except shoal.ShoalError as exc:
            print(exc)
        sys.modules["ray"] = None  # as if Ray were not installed
        try:
            shoal.Pool(backend="ray")
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "cannot reach the Ray cluster at '127.0.0.1:9' (from address=)" in out
    assert 'pip install "shoal[ray]"' in out


def _read_shared(handle: shoal.Shared[Any], lo: int, hi: int) -> tuple[int, str, bool]:
    rebuilt_by = handle.__reduce__()[0].__name__
    return int(handle.value[lo:hi].sum()), rebuilt_by, bool(handle.value.flags.writeable)


def test_a_shared_object_goes_through_the_object_store_once() -> None:
    np = pytest.importorskip("numpy")
    table = shoal.shared(np.arange(1_000_000))
    with shoal.Pool(backend="ray-session") as pool:
        answers = pool.starmap(_read_shared, [(table, 0, 10), (table, 10, 20)], chunksize=1)
        from_closure = pool.apply(lambda: int(table.value[-1]))
        assert len(pool._core.backend._placed) == 1  # type: ignore[attr-defined]
    assert answers == [(45, "_shared_from_store", False), (145, "_shared_from_store", False)]
    assert from_closure == 999_999
