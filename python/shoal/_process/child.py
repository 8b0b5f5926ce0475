"""What a ``shoal.Process``'s child runs, forked by the zygote: it takes on the program's
``sys.path``, working directory, ``sys.argv`` and ``__main__`` file, reaches the program's
resource tracker, then rebuilds its process object and runs it as multiprocessing's own
children do (``BaseProcess._bootstrap``: ``current_process()``, ``parent_process()``,
``run()``, the exit code, the exit handlers).

Its descriptors: the config (``ChildConfig``, pickled), the resource tracker when the
config says so, then the ones its arguments need (a queue, a lock, a pipe), which its
process object finds by their index (``shoal._process.worker.InheritedFd``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import sys
import types
from collections.abc import Sequence
from typing import Any, NamedTuple

from shoal._process import worker
from shoal._process.identity import Lineage
from shoal._wire import namespaces

__all__ = ["ChildConfig", "main"]


class ChildConfig(NamedTuple):
    """What a ``shoal.Process``'s child is told when it starts.

    Attributes:
        process: the process object, pickled (its target, arguments and identity).
        sys_path: the parent's ``sys.path``.
        cwd: the parent's working directory.
        parent: the parent's pid.
        lineage: the parent's ``sys.argv``, ``__main__`` file and logging settings.
        tracker: the child is given the parent's multiprocessing resource tracker.
    """

    process: bytes
    sys_path: list[str]
    cwd: str
    parent: int
    lineage: Lineage
    tracker: bool


def main(fds: Sequence[int]) -> None:
    """Runs the process described by ``fds`` and exits with its exit code."""
    code = 1
    try:
        code = _run(fds)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _run(fds: Sequence[int]) -> int:
    config_fd, *extra = fds
    # As a child of multiprocessing's: Ctrl-C is a KeyboardInterrupt here (the zygote
    # ignores it), and Process.interrupt() raises one.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    size = os.fstat(config_fd).st_size
    config: ChildConfig = pickle.loads(os.pread(config_fd, size, 0))
    os.close(config_fd)
    sys.path[:] = config.sys_path
    with contextlib.suppress(OSError):
        os.chdir(config.cwd)
    if config.tracker:
        tracker: Any = importlib.import_module("multiprocessing.resource_tracker")
        tracker._resource_tracker._fd, *extra = extra  # (a private name the stubs leave out)
    worker._inherited[:] = extra
    sys.argv[:] = config.lineage.argv
    main = types.ModuleType("__main__")
    if config.lineage.main_file is not None:
        main.__file__ = config.lineage.main_file
    # Functions and classes of the program's __main__ arrive by value into this one.
    namespaces.share(main)
    util: Any = importlib.import_module("multiprocessing.util")
    if config.lineage.log_to_stderr:
        util.log_to_stderr()
    if config.lineage.log_level is not None:
        util.get_logger().setLevel(config.lineage.log_level)
    process = pickle.loads(config.process)
    from shoal._mp.process import run_in_child

    return run_in_child(process, _sentinel(config.parent))


def _sentinel(pid: int) -> int | None:
    """A descriptor readable once ``pid`` exits (``parent_process().join()`` waits on it)."""
    with contextlib.suppress(OSError):
        return os.pidfd_open(pid)
    return None
