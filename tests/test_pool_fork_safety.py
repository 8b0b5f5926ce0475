"""A process forked from one that used a process pool (``os.fork``, multiprocessing's
fork) is healthy: the pool's engine in the copy neither waits for a thread that the copy
does not have nor touches the original's workers."""

from __future__ import annotations

import gc
import os
import time

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


def test_a_fork_child_leaves_the_parents_workers_alone() -> None:
    with shoal.Pool(2) as pool:
        pool.map(abs, range(4))

        def drop_the_pool_copy() -> None:
            pool.terminate()
            gc.collect()

        assert _forked_exit_status(drop_the_pool_copy) == 0
        time.sleep(0.05)
        # The parent's workers were not killed by the child's copy of the pool.
        assert pool.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]
