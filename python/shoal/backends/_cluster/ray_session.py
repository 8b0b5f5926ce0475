"""The Ray backend's connection: Ray has one per process, so the pools of a program share
it, and the last pool to end closes it if a pool opened it.

Which Ray a pool uses, first match wins:

1. the one this process is already connected to (a program's own ``ray.init()``, kept
   open when the pools end); an ``address=`` naming another is an error, as Ray has one
   connection per process;
2. ``address=`` given to the Pool, or else the ``RAY_ADDRESS`` environment variable: a
   running cluster, disconnected from when the last pool ends;
3. a local Ray started for the pool, with ``processes`` CPUs (this machine's by default),
   stopped when the last pool ends. Its workers find the modules the program can import
   (its ``sys.path`` becomes theirs), and a program needs no ``__main__`` guard: Ray's
   workers never run the program's script.

Example (no Ray is needed to ask whether one is installed):
    >>> import importlib.util
    >>> (importlib.util.find_spec("ray") is not None) == _installed()
    True
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
import threading
from typing import Any, Final

from shoal.backends.base import WorkerSpec, local_workers
from shoal.errors import ShoalError

__all__ = ["CONNECT_TIMEOUT", "connect", "disconnect"]

CONNECT_TIMEOUT: Final = 10.0
"""Seconds to reach the cluster named by ``address=`` or ``RAY_ADDRESS`` before the pool
gives up."""

_lock = threading.Lock()
_pools = 0  # pools now using the connection
_opened = False  # whether shoal opened it (and so closes it)


def _installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError('backend="ray" needs Ray: pip install "shoal[ray]"') from exc
    return ray


def connect(address: str | None, spec: WorkerSpec) -> Any:
    """The ``ray`` module, connected as the module's docstring says; counts one pool."""
    global _pools, _opened
    ray = _ray()
    with _lock:
        if not ray.is_initialized():
            _open(ray, address, spec)
            _opened = True
        elif address not in (None, "auto") and not _is_current(ray, address):
            raise ShoalError(
                f"this process is already connected to the Ray cluster at {_current(ray)!r}, "
                f"not {address!r}, and Ray allows one connection per process: leave "
                "address= out to use it, or call ray.shutdown() first"
            )
        _pools += 1
    return ray


def _current(ray: Any) -> str:
    return str(ray.get_runtime_context().gcs_address)


def _is_current(ray: Any, address: str) -> bool:
    return address.removeprefix("ray://") == _current(ray)


def _open(ray: Any, address: str | None, spec: WorkerSpec) -> None:
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": True}
    target = address or os.environ.get("RAY_ADDRESS")
    if target is None:
        path = os.pathsep.join(p for p in sys.path if p)
        ray.init(
            num_cpus=local_workers(spec),
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
            **quiet,
        )
        return
    where = "address=" if address else "RAY_ADDRESS"
    try:
        _probe(target)
        ray.init(address=target, **quiet)
    except (ConnectionError, OSError) as exc:
        hint = "Start one with `ray start --head`, or leave the address out for a local Ray"
        if _refused_token(exc):
            hint = (
                "The cluster asks for a token: set RAY_AUTH_MODE=token, with the cluster's "
                "token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
            )
        raise ShoalError(
            f"cannot reach the Ray cluster at {target!r} (from {where}): {exc}. {hint}"
        ) from exc


def _refused_token(exc: BaseException | None) -> bool:
    while exc is not None:
        if "AuthToken" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _probe(target: str) -> None:
    # ray.init waits without end for a host:port where nothing answers: try the port
    # first, so that a wrong address fails within CONNECT_TIMEOUT.
    host, sep, port = target.removeprefix("ray://").rpartition(":")
    if sep and port.isdigit():
        with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT):
            pass


def disconnect(ray: Any) -> None:
    """One pool fewer; the last one closes the connection if shoal opened it."""
    global _pools, _opened
    with _lock:
        _pools -= 1
        if _pools == 0 and _opened:
            _opened = False
            ray.shutdown()
