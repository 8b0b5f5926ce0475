"""The Dask backend's cluster: a scheduler reached at an address, or a cluster started for
the pool (:class:`EmbeddedCluster`), closed with it."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from typing import Any, Final

from shoal.errors import ShoalError

__all__ = ["CONNECT_TIMEOUT", "EmbeddedCluster", "connect", "distributed_module"]

CONNECT_TIMEOUT: Final = 10.0
"""Seconds to reach a scheduler given by ``address`` before the pool gives up."""


def distributed_module() -> Any:
    """Dask's ``distributed`` package, or an ``ImportError`` that says how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            'backend="dask" needs Dask\'s distributed scheduler: pip install "shoal[dask]"'
        ) from exc
    return distributed


# Seconds the embedded cluster's workers live on after losing their scheduler (when the
# program that made the pool is killed), and the longest wait for them to join.
_ORPHAN_SECONDS: Final = 10
_START_TIMEOUT: Final = 120.0


class EmbeddedCluster:
    """A scheduler in this process and ``n`` single-threaded workers started by Dask's own
    ``dask worker`` command, a program of its own: multiprocessing inside it never
    re-runs the user's script (which a ``LocalCluster``'s spawned workers would, in a
    script without an ``if __name__ == "__main__":`` guard)."""

    def __init__(self, distributed: Any, n: int) -> None:
        import dask

        # A task fails at its worker's first death: the Pool's retries decide the rest.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            # The scheduler always serves HTTP (metrics at least): on a free port, never
            # on the dashboard's 8787, which another program or cluster may hold.
            self.scheduler = distributed.LocalCluster(
                n_workers=0, dashboard_address=":0", silence_logs=logging.CRITICAL
            )
        self.client = distributed.Client(self.scheduler, set_as_default=False)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        command = [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            self.scheduler.scheduler_address,
            "--nworkers",
            str(n),
            "--nthreads",
            "1",
            "--no-dashboard",
            "--memory-limit",
            "0",
            "--death-timeout",
            str(_ORPHAN_SECONDS),
        ]
        self.workers = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            self.client.wait_for_workers(n, timeout=_START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stops the workers (their nannies end them) and the scheduler."""
        self.workers.terminate()
        try:
            self.workers.wait(30)
        except subprocess.TimeoutExpired:
            self.workers.kill()
            self.workers.wait()
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.scheduler.close()


def connect(
    distributed: Any, workers: int, address: str | None
) -> tuple[Any, EmbeddedCluster | None]:
    """A client for the scheduler at ``address`` (failing within :data:`CONNECT_TIMEOUT`
    seconds, naming it), or without one for a cluster of ``workers`` started here, and
    that cluster (the pool closes it)."""
    if address is None:
        cluster = EmbeddedCluster(distributed, workers)
        return cluster.client, cluster
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False), None
    except (OSError, TimeoutError) as exc:
        raise ShoalError(
            f"cannot reach the Dask scheduler at {address!r} within {CONNECT_TIMEOUT:g} s: {exc}"
        ) from exc
