"""Shared fixtures: every test runs under a timeout (pyproject) so a hang fails loudly."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

import pytest
from pool_workers import BACKENDS

from shoal._process.launch import START_METHODS


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what each one names, leaving out the
    descriptor this listing itself opens and any closed while it was read (the Dask
    session's scheduler threads open and close sockets of their own)."""
    listing = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        found: dict[int, str] = {}
        for name in os.listdir(listing):
            fd = int(name)
            if fd == listing:
                continue
            try:
                link = os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:
                continue
            # (listdir reads through a copy of the listing descriptor, whose number
            # depends on what other threads hold at that instant.)
            if link != f"/proc/{os.getpid()}/fd":
                found[fd] = link
        return found
    finally:
        os.close(listing)


def memfd_mappings() -> int:
    """How many of this process's mappings are shoal memfd segments."""
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if re.search(r"/memfd:shoal-", line))


@pytest.fixture(params=["fork", "spawn", "forkserver"])
def start_method(request: pytest.FixtureRequest) -> str:
    """Each multiprocessing start method in turn."""
    method: str = request.param
    return method


@pytest.fixture(params=START_METHODS)
def pool_start_method(request: pytest.FixtureRequest) -> str:
    """Each way shoal's process pool starts workers, in turn."""
    method: str = request.param
    return method


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each Pool backend in turn (``pool_workers.BACKENDS``); the cluster ones start on
    first use, once for the session (see ``_session_dask`` and ``_session_ray``). A test
    meant for some backends only names them with ``@pytest.mark.parametrize("backend",
    ...)``, which takes this fixture's place (``pool_workers.OWN_WORKERS``, say)."""
    name: str = request.param
    return name


def _register_the_docs_example_backend() -> None:
    """Registers docs/backends.md's example backend as "docs-example", as that page
    defines it, so the Pool's behaviour tests run on it and the page cannot drift from
    the protocol."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "backends.md").read_text()
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL) if "register(" in b
    )
    definition = block[: block.index("register(")]
    namespace: dict[str, object] = {"__name__": "docs_example_backend"}
    exec(compile(definition, "docs/backends.md", "exec"), namespace)
    from shoal.backends import register

    register("docs-example", namespace["ExecutorBackend"])  # type: ignore[arg-type]


_register_the_docs_example_backend()


_dask_cluster: Any = None


def _session_dask(spec: Any, sink: Any, **options: Any) -> Any:
    """The dask backend on one cluster for the whole test session (two single-threaded
    workers, started on first use): a cluster per pool would cost seconds each."""
    global _dask_cluster
    import distributed

    from shoal.backends._cluster.dask_session import EmbeddedCluster
    from shoal.backends.dask import DaskBackend

    if _dask_cluster is None:
        _dask_cluster = EmbeddedCluster(distributed, 2)
    return DaskBackend(spec, sink, client=_dask_cluster.client, **options)


_ray_started = False


def _session_ray(spec: Any, sink: Any, **options: Any) -> Any:
    """The ray backend on one local Ray for the whole test session (two CPUs, started on
    first use), opened as a program that calls ``ray.init()`` itself would: the pools
    use it and leave it running."""
    global _ray_started
    import ray

    from shoal.backends.ray import RayBackend

    if not _ray_started:
        path = os.pathsep.join(p for p in sys.path if p)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
        _ray_started = True
    return RayBackend(spec, sink, **options)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _dask_cluster is not None:
        _dask_cluster.close()
    if _ray_started:
        import ray

        ray.shutdown()


def _register_session_backends() -> None:
    import importlib.util

    from shoal.backends import register

    if importlib.util.find_spec("distributed") is not None:
        register("dask-session", _session_dask)
    if importlib.util.find_spec("ray") is not None:
        register("ray-session", _session_ray)


_register_session_backends()
