"""The zygote imports, before it forks a pool's workers, the installed packages the
program had imported when the pool was made, so that each worker starts with them loaded
(as a forked worker would) instead of importing pandas or gensim afresh.

Which modules: those in ``sys.modules`` whose file lies in site-packages (pandas costs a
second to import; a standard library module a task needs costs its worker a few
milliseconds, and the packages bring the ones they use; the program's own modules, test
modules and ``__main__`` are left to the workers too, which import what tasks need), less
debuggers, profilers and IDE hooks (a kernel's debugpy: their imports act on the process,
and print), less ``SHOAL_PRELOAD_SKIP`` (comma-separated names; a package's name skips its
submodules too). ``SHOAL_PRELOAD=0`` turns it off. What the imports print goes nowhere
(``shoal._process.zygote``): a program sees only what its own code prints.

An import that fails is ignored (the worker will meet the error, if it needs the module,
as it would have). An import that leaves a Python thread running makes the zygote unsafe
to fork: it says which module did, is retired (it stays up for the workers it already
forked, which die with it) and a new zygote, told never to import that module, takes
its place.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import sysconfig
import threading
from collections.abc import Iterable
from typing import Any, Final

__all__ = ["import_all", "preload_parent_modules", "worth_preloading"]

# Modules whose import does something besides defining names.
_NEVER: Final = frozenset({"__main__", "__mp_main__", "this", "antigravity"})
# Debuggers, profilers, coverage and IDE hooks, by top-level package: the program's
# process runs under them, its workers need not (and their imports print, trace, patch).
_HOOKS: Final = frozenset(
    {
        "debugpy",
        "pydevd",
        "pydevconsole",
        "pydevd_plugins",
        "pydevd_file_utils",
        "pydevd_tracing",
        "bdb",
        "pdb",
        "ipdb",
        "coverage",
        "cProfile",
        "profile",
        "pyinstrument",
        "line_profiler",
        "yappi",
        "memray",
        "scalene",
        "viztracer",
        "teamcity",
        "ipykernel",
        "IPython",
    }
)
_HOOK_PREFIXES: Final = ("_pydev", "pydev_", "_jb_")
# Zygotes replaced because an import left a thread, before the preload gives up.
_MAX_RETIRED: Final = 3

# Modules that left a thread in a zygote: never imported there again.
_threaded: set[str] = set()
_preloading = threading.Lock()
# How many modules sys.modules held when the last preload looked, and for which zygote.
_seen = 0
_seen_zygote: object = None


def _install_dirs() -> tuple[str, ...]:
    """The directories installed packages live in: this environment's site-packages, and
    those ``site`` added (a Debian system Python's dist-packages, the user's own)."""
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("purelib", "platlib") if key in paths}
    site = sys.modules.get("site")
    for name in ("getsitepackages", "getusersitepackages"):
        with contextlib.suppress(Exception):
            found = getattr(site, name)()
            dirs.update([found] if isinstance(found, str) else found)
    return tuple(os.path.join(d, "") for d in sorted(dirs))


def _skipped(name: str, skip: frozenset[str]) -> bool:
    top = name.partition(".")[0]
    return (
        name in skip
        or top in skip
        or top == "shoal"
        or name in _NEVER
        or top in _HOOKS
        or top.startswith(_HOOK_PREFIXES)
    )


def worth_preloading(modules: Iterable[tuple[str, object]] | None = None) -> list[str]:
    """The names of the modules (``sys.modules``' items by default) a zygote should
    import, in the order they were first imported.

    Example:
        >>> import cloudpickle, json, sys
        >>> modules = [("cloudpickle", cloudpickle), ("json", json), ("sys", sys)]
        >>> worth_preloading(modules)  # the standard library's are left to the workers
        ['cloudpickle']
    """
    if os.environ.get("SHOAL_PRELOAD") == "0":
        return []
    skip = frozenset(
        n.strip() for n in os.environ.get("SHOAL_PRELOAD_SKIP", "").split(",") if n.strip()
    )
    dirs = _install_dirs()
    names = []
    for name, module in list(sys.modules.items() if modules is None else modules):
        if _skipped(name, skip) or name in _threaded:
            continue
        origin = getattr(getattr(module, "__spec__", None), "origin", None)
        if isinstance(origin, str) and origin.startswith(dirs):
            names.append(name)
    return names


def preload_parent_modules() -> None:
    """Has this process's zygote import what :func:`worth_preloading` names (once each);
    never raises: a zygote that cannot preload still forks workers."""
    from shoal._process.zygote import retire_shared_zygote, shared_zygote

    global _seen
    # Nothing new imported since the last preload: nothing to scan for (a Process start
    # or a pool would otherwise pay for a walk over sys.modules each time).
    if len(sys.modules) == _seen and _seen_zygote is shared_zygote():
        return
    with _preloading:  # one at a time, each sending only what the last did not
        _preload_parent_modules(retire_shared_zygote, shared_zygote)


def _preload_parent_modules(retire: Any, shared: Any) -> None:
    global _seen, _seen_zygote
    try:
        for _ in range(_MAX_RETIRED + 1):
            zygote = shared()
            count = len(sys.modules)
            names = [n for n in worth_preloading() if n not in zygote.preloaded]
            _seen, _seen_zygote = count, zygote
            if not names:
                return
            culprit = zygote.preload(names)
            if culprit is None:
                return
            _threaded.add(culprit)
            retire(zygote)
    except Exception:
        return


def import_all(names: Iterable[str]) -> str | None:
    """In the zygote: imports each module, ignoring failures; stops at the first one
    after whose import another Python thread runs, and returns its name."""
    for name in names:
        if name in sys.modules:
            continue
        # A module's failure is the worker's to meet, if it needs the module.
        with contextlib.suppress(BaseException):
            importlib.import_module(name)
        if len(sys._current_frames()) > 1:
            return name
    return None
