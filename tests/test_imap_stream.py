"""How imap's results stream to their consumer: for loops, next() and next(timeout) share
one position, so leaving a loop, a task's error, a timeout or a second consumer thread
never loses or repeats a result."""

from __future__ import annotations

import threading
from multiprocessing import TimeoutError as MpTimeoutError
from pathlib import Path

import pytest
from pool_workers import divide_by, square, wait_for_file

import shoal


@pytest.mark.parametrize("chunksize", [1, 7, 1000])
def test_leaving_a_loop_and_coming_back_loses_nothing(backend: str, chunksize: int) -> None:
    with shoal.Pool(2, backend=backend) as pool:
        it = pool.imap(square, range(100), chunksize=chunksize)
        got = []
        for value in it:
            got.append(value)
            if len(got) == 10:
                break
        got += [next(it), it.next(timeout=30)]
        for value in it:
            got.append(value)
            if len(got) == 50:
                break
        got += list(it)
        assert got == [x * x for x in range(100)]
        with pytest.raises(StopIteration):
            next(it)


@pytest.mark.parametrize("ordered", [True, False])
def test_each_error_raises_at_its_place_and_the_stream_goes_on(backend: str, ordered: bool) -> None:
    with shoal.Pool(2, backend=backend) as pool:
        xs = [1, 0, 2, 0, 0, 3, 4, 0]
        run = pool.imap if ordered else pool.imap_unordered
        it = run(divide_by, xs, chunksize=8)
        outcomes: list[object] = []
        while True:
            try:
                outcomes.extend(it)  # a for loop ends at an error; the next one goes on
                break
            except ZeroDivisionError:
                outcomes.append("error")
        expected = ["error" if x == 0 else 1 / x for x in xs]
        if ordered:
            assert outcomes == expected
        else:
            assert sorted(map(str, outcomes)) == sorted(map(str, expected))


def test_a_timeout_keeps_the_position(backend: str, tmp_path: Path) -> None:
    ready, gate = tmp_path / "ready", tmp_path / "gate"
    ready.touch()
    with shoal.Pool(1, backend=backend) as pool:
        it = pool.imap(wait_for_file, [str(ready), str(gate), str(ready)], chunksize=1)
        assert it.next(timeout=30) is True
        with pytest.raises(MpTimeoutError):
            it.next(timeout=0.05)  # the second waits for the gate
        gate.touch()
        assert list(it) == [True, True]


def test_two_consumer_threads_share_the_results(backend: str) -> None:
    with shoal.Pool(2, backend=backend) as pool:
        it = pool.imap(square, range(20_000), chunksize=100)
        taken: list[list[int]] = [[], []]

        def consume(mine: list[int]) -> None:
            for value in it:
                mine.append(value)

        threads = [threading.Thread(target=consume, args=(mine,)) for mine in taken]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(taken[0] + taken[1]) == sorted(x * x for x in range(20_000))
