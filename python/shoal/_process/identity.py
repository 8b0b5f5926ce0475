"""What a pool worker knows about itself, set as multiprocessing sets it in its workers.

Programs look at ``multiprocessing.current_process().name`` (logging's
``%(processName)s``, ``if current_process().name == "MainProcess":``), at ``_identity``
to pick a GPU per worker, at ``parent_process()``, ``sys.argv`` and
``__main__.__file__``; and ``multiprocessing.log_to_stderr()`` in the parent is expected
to reach the workers. The parent writes down what the workers need
(:meth:`Lineage.of_this_process`); each worker, at start, becomes a worker
(:func:`become_worker`): named as multiprocessing would have named it in the same program
(:func:`worker_names`: ``ForkPoolWorker-N``, ``SpawnProcess-N``...), with ``_identity``
the parent's plus ``(N,)``, N counted as multiprocessing counts this process's children.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
from typing import Any, NamedTuple

from shoal._wire import namespaces as _namespaces

__all__ = [
    "Lineage",
    "become_worker",
    "leave",
    "next_number",
    "program_start_method",
    "worker_names",
]

# multiprocessing's Process classes, by start method: ForkProcess, SpawnProcess...
_PROCESS_KINDS = {"fork": "Fork", "spawn": "Spawn", "forkserver": "ForkServer"}


def program_start_method() -> str:
    """The start method multiprocessing uses in this program: the one it set, or this
    Python's default (``fork`` on Linux up to 3.13, ``forkserver`` from 3.14). Asking
    does not set it, as ``multiprocessing.get_start_method()`` would."""
    import multiprocessing

    # (get_all_start_methods lists the default first.)
    return multiprocessing.get_start_method(True) or multiprocessing.get_all_start_methods()[0]


def worker_names(method: str, role: str) -> str:
    """What multiprocessing calls the workers it starts by ``method`` for ``role``:
    a Pool's (``"pool"``) or a ``ProcessPoolExecutor``'s (``"executor"``); each worker
    is that and ``-N``.

    >>> worker_names("fork", "pool"), worker_names("forkserver", "executor")
    ('ForkPoolWorker', 'ForkServerProcess')
    """
    kind = _PROCESS_KINDS.get(method, "")
    return f"{kind}PoolWorker" if role == "pool" else f"{kind}Process"


class Lineage(NamedTuple):
    """The parent's facts every worker of a pool takes on.

    Attributes:
        name: the parent's ``current_process().name``.
        identity: the parent's ``current_process()._identity``.
        argv: the parent's ``sys.argv``.
        main_file: the parent's ``__main__.__file__``, if it has one.
        log_level: the level of multiprocessing's logger, if the parent made it.
        log_to_stderr: whether the parent called ``multiprocessing.log_to_stderr()``.
        worker_names: what the pool's workers are called, but for their ``-N``
            (:func:`worker_names`).
    """

    name: str
    identity: tuple[int, ...]
    argv: list[str]
    main_file: str | None
    log_level: int | None
    log_to_stderr: bool
    worker_names: str

    @classmethod
    def of_this_process(cls, worker_names: str) -> Lineage:
        """This process's facts, as its pool's workers (``worker_names``) should see
        them."""
        import multiprocessing

        util = _private("multiprocessing.util")
        me = multiprocessing.current_process()
        main = sys.modules.get("__main__")
        main_file = getattr(main, "__file__", None)
        logger = util._logger
        return cls(
            name=me.name,
            identity=tuple(me._identity),
            argv=list(sys.argv),
            main_file=os.path.abspath(main_file) if isinstance(main_file, str) else None,
            log_level=None if logger is None else logger.getEffectiveLevel(),
            log_to_stderr=bool(util._log_to_stderr),
            worker_names=worker_names,
        )


def next_number() -> int:
    """The next worker's number: multiprocessing's count of this process's children, so
    that a shoal worker and a ``multiprocessing.Process`` never share one."""
    number: int = next(_private("multiprocessing.process")._process_counter)
    return number


def become_worker(lineage: Lineage, number: int, parent: int, *, forked_from_parent: bool) -> None:
    """Makes this process a pool worker in multiprocessing's eyes: its name, identity,
    parent, ``sys.argv``, ``__main__`` (a fresh module with the parent's file, unless the
    process is a fork of the parent and has its ``__main__`` already) and logging."""
    process, util = _private("multiprocessing.process"), _private("multiprocessing.util")
    me = process.current_process()
    me._identity = (*lineage.identity, number)
    me._name = f"{lineage.worker_names}-{number}"
    me._parent_pid = parent
    me._parent_name = lineage.name
    process._parent_process = process._ParentProcess(lineage.name, parent, _sentinel(parent))
    if not forked_from_parent:
        sys.argv[:] = lineage.argv
        main = types.ModuleType("__main__")
        if lineage.main_file is not None:
            main.__file__ = lineage.main_file
        _namespaces.share(main)
    else:
        _namespaces.share(None)
        # As multiprocessing's forked children start: the parent's children and exit
        # handlers are not this process's, and objects made before the fork (queues,
        # locks) reset what only their creator had (a queue's feeder thread...).
        process._children = set()
        util._finalizer_registry.clear()
        util._run_after_forkers()
    if lineage.log_to_stderr:
        util.log_to_stderr()
    if lineage.log_level is not None:
        util.get_logger().setLevel(lineage.log_level)


def leave() -> None:
    """What multiprocessing does as its child processes end, for a worker that leaves by
    ``os._exit``: exit handlers run, so queues the worker put into flush their buffers."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        with contextlib.suppress(Exception):
            util._exit_function()


def _private(module: str) -> Any:
    """A multiprocessing module, to reach the private names its workers are made with
    (multiprocessing's stubs leave them out; they are stable since Python 3.8)."""
    return importlib.import_module(module)


def _sentinel(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (``parent_process()``'s
    ``is_alive`` and ``join`` wait on it), or ``None`` if it is gone already."""
    with contextlib.suppress(OSError):
        return os.pidfd_open(pid)
    return None
