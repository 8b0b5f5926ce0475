"""A process forked from one that used a process pool (``os.fork``, multiprocessing's
fork) is healthy: the pool's engine in the copy neither waits for a thread that the copy
does not have nor touches the original's workers."""

from __future__ import annotations

import functools
import gc
import os
from pathlib import Path

from pool_workers import meet

import shoal


def _forked_exit_status(child: object) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            assert callable(child)
            child()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_fork_child_collects_garbage_left_by_a_pool() -> None:
    for _ in range(10):
        pool = shoal.Pool(2)
        pool.map(abs, range(10))
        pool.terminate()
        assert _forked_exit_status(gc.collect) == 0


def _answering_pids(pool: shoal.Pool, folder: Path) -> set[int]:
    """The pids of the pool's two workers, each made to answer (see ``meet``)."""
    folder.mkdir()
    return set(pool.map(functools.partial(meet, str(folder)), range(2), chunksize=1))


def test_a_fork_child_leaves_the_parents_workers_alone(tmp_path: Path) -> None:
    with shoal.Pool(2) as pool:
        before = _answering_pids(pool, tmp_path / "before")

        def drop_the_pool_copy() -> None:
            pool.terminate()
            gc.collect()

        assert _forked_exit_status(drop_the_pool_copy) == 0
        # The same two processes answer: had the child's copy killed them, the pool would
        # have replaced them (and answered all the same, from new pids).
        assert _answering_pids(pool, tmp_path / "after") == before
        assert [w.restart_count for w in pool.stats().workers] == [0, 0]
