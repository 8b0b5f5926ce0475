"""``progress=`` on maps: counts of finished tasks (not chunks) into a tqdm bar, a rich
Progress or a callable; totals known from ``len()`` or found at the end; closed on
errors, Ctrl-C and terminate; the same on every backend."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tqdm.auto as tqdm_auto
from pool_workers import OWN_WORKERS, fail_while_one_runs, nap, square
from rich.progress import Progress
from tqdm import tqdm

import shoal
from scripts import run_script


class Seen:
    """A progress callable that records what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int | None) -> None:
        with self._lock:
            self.calls.append((done, total))


def test_every_map_counts_tasks_not_chunks_on_every_backend(backend: str) -> None:
    with shoal.Pool(2, backend=backend) as pool:
        counts = {}
        runs: dict[str, Callable[[Seen], list[int]]] = {
            "map": lambda p: pool.map(square, range(200), chunksize=50, progress=p),
            "map_async": lambda p: pool.map_async(square, range(200), 50, progress=p).get(60),
            "starmap": lambda p: pool.starmap(pow, [(n, 2) for n in range(200)], 50, progress=p),
            "starmap_async": lambda p: pool.starmap_async(
                pow, [(n, 2) for n in range(200)], 50, progress=p
            ).get(60),
            "imap": lambda p: list(pool.imap(square, range(200), 50, progress=p)),
            "imap_unordered": lambda p: list(
                pool.imap_unordered(square, range(200), 50, progress=p)
            ),
        }
        for name, run in runs.items():
            seen = Seen()
            assert sorted(run(seen)) == [n * n for n in range(200)]
            counts[name] = seen.calls
        for name, calls in counts.items():
            # Four chunks of 50 tasks: the counts climb by 50 to the total, known from len().
            assert sorted(calls) == [(50, 200), (100, 200), (150, 200), (200, 200)], name


def test_an_endless_input_counts_without_a_total() -> None:
    seen = Seen()
    with shoal.Pool(2) as pool:
        got = list(itertools.islice(pool.imap(square, itertools.count(), progress=seen), 500))
    assert got == [n * n for n in range(500)]
    assert seen.calls[-1][0] >= 500
    assert {total for _, total in seen.calls} == {None}
    dones = [done for done, _ in seen.calls]
    assert dones == sorted(dones)


def test_an_input_without_len_gets_its_total_at_the_end() -> None:
    seen = Seen()
    with shoal.Pool(2) as pool:
        assert sum(pool.imap_unordered(square, iter(range(300)), progress=seen)) == sum(
            n * n for n in range(300)
        )
    assert seen.calls[-1] == (300, 300)
    assert seen.calls[0][1] is None


def test_a_given_tqdm_bar_and_rich_progress_are_used_and_left_open() -> None:
    bar = tqdm(disable=False, leave=False)
    with shoal.Pool(2) as pool:
        pool.map(square, range(120), progress=bar)
        assert (bar.n, bar.total) == (120, 120)
        assert not bar.disable  # still the caller's, open
        with Progress(transient=True) as rich_bar:
            list(pool.imap(square, range(80), progress=rich_bar))
            (task,) = rich_bar.tasks
            assert (task.completed, task.total) == (80, 80)
    bar.close()


def test_a_map_that_fails_stops_counting(tmp_path: Path) -> None:
    seen = Seen()
    task = functools.partial(fail_while_one_runs, folder=str(tmp_path))
    with shoal.Pool(2) as pool:
        with pytest.raises(ValueError, match="bad item 0"):
            pool.map(task, range(40), chunksize=1, progress=seen)
        settled = list(seen.calls)
        # The chunks still out (item 1's at least) finish now; join waits for all of them
        # to be answered. Nobody counts them.
        (tmp_path / "open").touch()
        pool.close()
        pool.join()
        assert pool.stats().tasks_done > settled[-1][0]
    assert seen.calls == settled


def test_terminate_closes_the_count() -> None:
    seen = Seen()
    pool = shoal.Pool(2)
    results = pool.imap(nap, [0.05] * 100, progress=seen)
    next(results)
    pool.terminate()
    pool.join()
    settled = list(seen.calls)
    time.sleep(0.2)
    assert seen.calls == settled
    assert settled[-1][0] < 100


def test_terminate_closes_a_bar_shoal_made(monkeypatch: pytest.MonkeyPatch) -> None:
    # (A callable cannot tell whether its counter was closed: answers that arrive after
    # terminate are dropped anyway. The bar that progress=True makes must be closed.)
    made: list[tqdm[Any]] = []

    def kept(*args: Any, **kwargs: Any) -> tqdm[Any]:
        made.append(tqdm(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tqdm_auto, "tqdm", kept)
    pool = shoal.Pool(2)
    results = pool.imap(nap, [0.05] * 100, progress=True)
    next(results)
    (bar,) = made
    assert not bar.disable
    pool.terminate()
    pool.join()
    assert bar.disable  # what close() does
    assert bar.n < 100


def test_executor_map_counts_too() -> None:
    seen = Seen()
    with shoal.Executor(2) as ex:
        assert list(ex.map(pow, range(30), [2] * 40, progress=seen)) == [n * n for n in range(30)]
    assert seen.calls[-1] == (30, 30)


def test_bad_progress_values_say_what_is_taken() -> None:
    with shoal.Pool(1, backend="thread") as pool, pytest.raises(TypeError, match="tqdm bar"):
        pool.map(square, [1], progress=42)


def test_a_bar_in_a_script_survives_ctrl_c(tmp_path: Path, pool_start_method: str) -> None:
    done = run_script(
        """
        import os, signal, threading, time
        import shoal

        def slow(x):
            time.sleep(0.1)
            return x

        pool = shoal.Pool(2, start_method=START)
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            pool.map(slow, range(100), chunksize=1, progress=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print(pool.map(abs, range(-4, 0), progress=True))
        pool.close()
        pool.join()
        """,
        tmp_path,
        pool_start_method,
    )
    assert done.stdout.splitlines() == ["interrupted", "[4, 3, 2, 1]"]
    assert "4/4" in done.stderr  # the second bar ran to its end


def test_a_map_with_a_bar_moves_in_small_steps() -> None:
    seen = Seen()
    with shoal.Pool(2) as pool:
        pool.map(square, range(1000), progress=seen)
    # multiprocessing's chunking would give 8 chunks of 125 here; with a bar, 100 of 10.
    assert len(seen.calls) == 100
    assert seen.calls[-1] == (1000, 1000)


@pytest.mark.parametrize("backend", OWN_WORKERS)
@pytest.mark.parametrize("kind", ["map", "imap"])
def test_a_bar_moves_while_long_chunks_run(backend: str, kind: str) -> None:
    # Two chunks of 100 tasks of 10 ms: each runs a second, and its worker reports how
    # far it has got about every 0.2 s, so the bar moves inside the chunks.
    seen = Seen()
    with shoal.Pool(2, backend=backend) as pool:
        if kind == "map":
            out = pool.map(nap, [0.01] * 200, chunksize=100, progress=seen)
        else:
            out = list(pool.imap(nap, [0.01] * 200, chunksize=100, progress=seen))
    assert out == [0.01] * 200
    done = [d for d, _ in seen.calls]
    assert done == sorted(done)
    assert done[-1] == 200
    assert len(done) == len(set(done))  # no task counted twice
    inside = [d for d in done if d not in (100, 200)]
    assert len(inside) >= 2, seen.calls
    assert seen.calls[-1] == (200, 200)


def test_a_script_bar_moves_inside_its_chunks(tmp_path: Path, pool_start_method: str) -> None:
    done = run_script(
        """
        import time
        import shoal

        seen = []
        with shoal.Pool(1, start_method=START) as pool:
            pool.map(lambda x: time.sleep(0.01), range(100), chunksize=100,
                     progress=lambda done, total: seen.append(done))
        print(seen[-1], len(seen) > 2, seen == sorted(set(seen)))
        """,
        tmp_path,
        pool_start_method,
    )
    assert done.stdout == "100 True True\n"
