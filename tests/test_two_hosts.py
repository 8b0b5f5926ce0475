"""shoal.Pool(backend="dask") with the scheduler and a worker on a second host (a network
and PID namespace of their own, see two_hosts.py): client and worker meet only over TCP,
so nothing of shoal's may reach the worker through shared memory, a Unix socket or
/proc. A shoal.shared object and large arrays cross both ways and are checked."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from two_hosts import Host, second_host, why_not
from waiting import wait_for

import shoal

pytest.importorskip("distributed")
np = pytest.importorskip("numpy")

_CANNOT = why_not()
pytestmark = pytest.mark.skipif(_CANNOT is not None, reason=f"no second host: {_CANNOT}")

_PORT = 8786


def _start(host: Host, *argv: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.Popen(
        host.command(sys.executable, "-m", *argv),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A Dask scheduler and one single-threaded worker on the second host; its address."""
    with second_host() as host:
        address = f"tcp://{host.address}:{_PORT}"
        programs = [
            _start(
                host,
                "distributed.cli.dask_scheduler",
                "--host",
                host.address,
                "--port",
                str(_PORT),
                "--no-dashboard",
            )
        ]
        try:
            programs.append(
                _start(
                    host,
                    "distributed.cli.dask_worker",
                    address,
                    "--host",
                    host.address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--memory-limit",
                    "0",
                )
            )
            yield address
        finally:
            for program in programs:
                program.kill()  # and with it its PID namespace (unshare --kill-child)
                program.wait()


def _where_and_what(handle: shoal.Shared[Any], big: Any) -> tuple[str, int, int, Any]:
    """Which host ran this (the other one has its own PID 1), and what it read."""
    with open("/proc/1/cmdline", "rb") as init:
        first = init.read().split(b"\0")[0].decode()
    return first, int(handle.value.sum()), int(big.sum()), big * 2


def _wait_for_a_worker(pool: shoal.Pool) -> None:
    client = pool._core.backend._client  # type: ignore[attr-defined]
    wait_for(
        lambda: client.scheduler_info()["workers"], "the second host's worker", 60, interval=0.2
    )


def test_a_pool_on_the_other_host_gets_shared_objects_and_arrays_over_tcp(
    scheduler: str,
) -> None:
    table = shoal.shared(np.arange(4_000_000, dtype=np.int64))  # 32 MiB
    big = np.ones(2 * 1024 * 1024, dtype=np.int64)  # 16 MiB each way
    with shoal.Pool(1, backend="dask", address=scheduler) as pool:
        _wait_for_a_worker(pool)
        first, total, ones, doubled = pool.apply(_where_and_what, (table, big))
        assert pool.map(abs, range(-3, 0)) == [3, 2, 1]
    assert "python" in first  # its PID 1 is the worker's own program, not this host's init
    assert total == int(table.value.sum())
    assert ones == big.size
    assert doubled.shape == big.shape
    assert bool((doubled == 2).all())
