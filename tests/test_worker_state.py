"""``shoal.current_worker()``: a stable index per worker (reused by its replacement), its
pid, and a ``state`` dict that an initializer can fill once and every task can read,
with no global; fresh in a replacement worker."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from pool_workers import OWN_WORKERS, meet, square

import shoal
from scripts import run_script


def test_a_script_loads_a_model_once_per_worker(tmp_path: Path, pool_start_method: str) -> None:
    done = run_script(
        """
        import os
        import shoal

        def load_model():
            shoal.current_worker().state["model"] = {"loaded_by": os.getpid(), "calls": 0}

        def predict(x):
            worker = shoal.current_worker()
            model = worker.state["model"]
            model["calls"] += 1
            return worker.index, worker.pid, model["loaded_by"], model["calls"]

        with shoal.Pool(2, initializer=load_model, start_method=START) as pool:
            rows = pool.map(predict, range(40), chunksize=1)
        print(sorted({index for index, *_ in rows}))
        print(all(pid == loaded_by for _, pid, loaded_by, _ in rows))
        per_pid = {}
        for _, pid, _, calls in rows:
            per_pid.setdefault(pid, []).append(calls)
        print(all(sorted(c) == list(range(1, len(c) + 1)) for c in per_pid.values()))
        """,
        tmp_path,
        pool_start_method,
    )
    assert done.stdout.splitlines() == ["[0, 1]", "True", "True"]


def _visit(item: tuple[str, int]) -> tuple[int, int, int]:
    folder, number = item
    if number < 2:
        # The first two tasks wait for each other, so that both workers run one whatever
        # the scheduler does (one thread can otherwise take every chunk of a quick map).
        meet(folder)
    worker = shoal.current_worker()
    worker.state["calls"] = worker.state.get("calls", 0) + 1
    return worker.index, worker.pid, worker.state["calls"]


@pytest.mark.parametrize("backend", OWN_WORKERS)
def test_a_replacement_keeps_the_index_and_starts_with_empty_state(
    backend: str, tmp_path: Path
) -> None:
    with shoal.Pool(2, backend=backend, maxtasksperchild=5) as pool:
        rows = pool.map(_visit, [(str(tmp_path), n) for n in range(60)], chunksize=1)
    assert {index for index, _, _ in rows} == {0, 1}
    # Each worker life sees its own count from 1 to at most 5: state does not carry over.
    assert max(calls for _, _, calls in rows) <= 5
    if backend == "process":
        assert len({pid for _, pid, _ in rows}) >= 12  # 60 tasks, 5 per worker life


def _die_once(marker: str) -> int:
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return shoal.current_worker().index


def test_a_worker_that_died_is_replaced_under_its_index(tmp_path: Path) -> None:
    with shoal.Pool(1) as pool:
        with pytest.raises(shoal.WorkerLostError):
            pool.apply(_die_once, (str(tmp_path / "died"),))
        assert pool.apply(_die_once, (str(tmp_path / "died"),)) == 0


def _ask(_: object) -> int:
    return shoal.current_worker().index


def test_outside_a_worker_it_says_where_it_works() -> None:
    with pytest.raises(RuntimeError, match="outside a shoal worker"):
        shoal.current_worker()


def test_cluster_backends_have_no_pool_worker_to_name() -> None:
    with shoal.Pool(2, backend="dask-session") as pool:
        with pytest.raises(RuntimeError, match="outside a shoal worker"):
            pool.apply(_ask, (0,))
        assert pool.apply(square, (3,)) == 9
