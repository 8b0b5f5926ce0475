"""``python -m shoal info``: the facts it prints are this machine's and this install's."""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys

import programs

import shoal
from shoal._shoal import ENGINE_BUILD


def _info(*flags: str) -> str:
    done = programs.run([sys.executable, "-m", "shoal", "info", *flags], timeout=60, check=True)
    assert done.stderr == ""
    return done.stdout


def test_info_reports_this_install_and_machine() -> None:
    facts = json.loads(_info("--json"))
    assert facts["shoal"] == {"version": shoal.__version__, "path": os.path.dirname(shoal.__file__)}
    assert facts["engine"] == ENGINE_BUILD
    assert facts["engine"].split()[1] in ("release", "debug")
    assert facts["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert facts["cpus"] == {
        "count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "pool_default": shoal.cpu_count(),
    }
    assert facts["start_methods"]["shoal_pool_default"] == "zygote"
    assert facts["shared_memory"]["memfd"] is True
    assert facts["shared_memory"]["open_files_limit"][0] > 0
    # The test tools install Ray, Dask and joblib; rich is optional everywhere.
    for name in ("ray", "distributed", "joblib", "cloudpickle"):
        assert facts["optional"][name] == importlib.metadata.version(name)


def test_info_as_lines_for_a_bug_report() -> None:
    lines = _info().splitlines()
    assert f"shoal.version: {shoal.__version__}" in lines
    assert f"engine: {ENGINE_BUILD}" in lines
    assert f"optional.ray: {importlib.metadata.version('ray')}" in lines
