"""``python -m shoal info``: what a user pastes into a bug report.

shoal's version and where it is loaded from, the engine build, Python, the start
methods, CPUs (count and this process's affinity), the shared-memory limits shoal works
within, and which optional libraries are installed (read from their metadata, without
importing them, so the command stays fast).

Example:
    >>> facts = collect()
    >>> facts["shoal"]["version"] == __import__("shoal").__version__
    True
    >>> facts["cpus"]["count"] == __import__("os").cpu_count()
    True
"""

from __future__ import annotations

import importlib.metadata
import json
import multiprocessing
import os
import platform
import resource
import sys
from typing import Any

__all__ = ["OPTIONAL", "collect", "render"]

OPTIONAL = (
    "distributed",
    "ray",
    "joblib",
    "scikit-learn",
    "numpy",
    "tqdm",
    "rich",
    "uvloop",
    "cloudpickle",
)
"""The libraries shoal works with when they are installed (``cloudpickle`` is required)."""


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _shm() -> dict[str, Any]:
    """``/dev/shm`` (where POSIX shared memory lives; shoal's memfds count against the
    same memory), the memory shoal's arena may use by default, and the limits that
    bound how many queues and locks a program can hold (one descriptor each)."""
    from shoal._wire.buffers import default_arena_bytes

    facts: dict[str, Any] = {"default_arena_bytes": default_arena_bytes()}
    try:
        stat = os.statvfs("/dev/shm")
        facts["dev_shm_bytes"] = stat.f_blocks * stat.f_frsize
        facts["dev_shm_free_bytes"] = stat.f_bavail * stat.f_frsize
    except OSError:
        facts["dev_shm_bytes"] = None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    facts["open_files_limit"] = [soft, hard]
    facts["memfd"] = hasattr(os, "memfd_create")
    return facts


def collect() -> dict[str, Any]:
    """The facts, as a JSON-ready dict."""
    import shoal
    from shoal._process.launch import check_start_method
    from shoal._shoal import ENGINE_BUILD

    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "shoal": {"version": shoal.__version__, "path": os.path.dirname(shoal.__file__)},
        "engine": ENGINE_BUILD,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": platform.platform(),
        "start_methods": {
            "shoal_pool_default": check_start_method(None),
            "multiprocessing_default": multiprocessing.get_start_method(allow_none=True)
            or multiprocessing.get_context().get_start_method(),
            "available": multiprocessing.get_all_start_methods(),
        },
        "cpus": {
            "count": os.cpu_count(),
            "affinity": affinity,
            "pool_default": shoal.cpu_count(),
        },
        "shared_memory": _shm(),
        "optional": {name: _installed(name) for name in OPTIONAL},
    }


def render(facts: dict[str, Any]) -> str:
    """The facts as ``key: value`` lines, nested keys joined by dots."""
    lines: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            shown = "not installed" if value is None and prefix.startswith("optional.") else value
            lines.append(f"{prefix}: {shown}")

    walk("", facts)
    return "\n".join(lines)


def main(as_json: bool) -> None:
    """Prints the facts."""
    facts = collect()
    print(json.dumps(facts, indent=2) if as_json else render(facts))
