"""asyncio's ways in: ``await`` on apply_async/map_async/submit results, ``async for``
over imap and imap_unordered, ``loop.run_in_executor`` with ``shoal.Executor``; on
asyncio's own loop and on uvloop, with no thread per waiting call, and cancellation that
takes back a task no worker has started."""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from pool_workers import add, fail_on, nap, square

import shoal
from scripts import run_script

T = TypeVar("T")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def loop_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def run(main: Coroutine[Any, Any, T], loop_kind: str) -> T:
    with asyncio.Runner(loop_factory=LOOPS[loop_kind]) as runner:
        return runner.run(main)


def test_every_result_can_be_awaited_on_every_backend(backend: str) -> None:
    async def main(pool: shoal.Pool) -> list[Any]:
        return [
            await pool.apply_async(square, (3,)),
            await pool.submit(add, 1, 2),
            await pool.map_async(square, range(5)),
            await pool.starmap_async(add, [(1, 1), (2, 2)]),
            [x async for x in pool.imap(square, range(50))],
            sorted([x async for x in pool.imap_unordered(square, range(50))]),
        ]

    squares = [n * n for n in range(50)]
    with shoal.Pool(2, backend=backend) as pool:
        got = run(main(pool), "asyncio")
    assert got == [9, 3, [0, 1, 4, 9, 16], [2, 4], squares, squares]


def test_errors_arrive_where_they_were_raised(loop_kind: str) -> None:
    async def main(pool: shoal.Pool) -> list[int]:
        with pytest.raises(ValueError, match="bad item 0"):
            await pool.apply_async(fail_on, (0,))
        with pytest.raises(ValueError, match="bad item 0"):
            await pool.submit(fail_on, 0)
        seen: list[int] = []

        async def read_all() -> None:
            async for value in pool.imap(functools.partial(fail_on, bad=3), range(1, 6)):
                seen.append(value)

        with pytest.raises(ValueError, match="bad item 3"):
            await read_all()
        return seen

    with shoal.Pool(2) as pool:
        seen = run(main(pool), loop_kind)
    assert seen == [1, 2]


def test_run_in_executor_and_an_endless_async_for(loop_kind: str) -> None:
    async def main(ex: shoal.Executor, pool: shoal.Pool) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        one = await loop.run_in_executor(ex, square, 7)
        many = await asyncio.gather(*(loop.run_in_executor(ex, square, n) for n in range(100)))
        firsts = []
        async for value in pool.imap(square, itertools.count()):
            firsts.append(value)
            if len(firsts) == 5:
                break
        return one, sum(many), firsts

    with shoal.Executor(2) as ex, shoal.Pool(2) as pool:
        got = run(main(ex, pool), loop_kind)
    assert got == (49, sum(n * n for n in range(100)), [0, 1, 4, 9, 16])


def test_waiting_calls_take_no_thread_each(loop_kind: str) -> None:
    async def main(pool: shoal.Pool) -> tuple[int, int, list[float]]:
        before = threading.active_count()
        waiting = [asyncio.ensure_future(pool.apply_async(nap, (0.01,))) for _ in range(300)]
        waiting += [asyncio.ensure_future(pool.submit(nap, 0.01)) for _ in range(300)]
        await asyncio.sleep(0.2)  # every one of them is parked by now
        during = threading.active_count()
        return before, during, await asyncio.gather(*waiting)

    with shoal.Pool(2) as pool:
        before, during, values = run(main(pool), loop_kind)
    assert during == before
    assert values == [0.01] * 600


def _touch(path: str) -> None:
    Path(path).touch()


@pytest.mark.parametrize("how", ["apply_async", "submit"])
def test_cancelling_the_awaiting_task_takes_back_an_unstarted_call(
    tmp_path: Path, loop_kind: str, how: str
) -> None:
    markers = [tmp_path / f"ran-{n}" for n in range(6)]

    async def main(pool: shoal.Pool) -> None:
        busy = pool.apply_async(nap, (1.0,))
        calls: list[Awaitable[None]] = [
            pool.apply_async(_touch, (str(marker),))
            if how == "apply_async"
            else pool.submit(_touch, str(marker))
            for marker in markers
        ]
        waiting = [asyncio.ensure_future(call) for call in calls]
        await asyncio.sleep(0.2)  # the one worker is busy: the calls wait
        for task in waiting:
            task.cancel()
        for task in waiting:
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await busy == 1.0

    with shoal.Pool(1) as pool:
        run(main(pool), loop_kind)
        pool.close()
        pool.join()
    # A worker may hold the next call or two ready behind the running one (those run,
    # and nobody reads them); the calls still queued are taken back and never run.
    assert not any(marker.exists() for marker in markers[2:])


def test_a_script_awaits_its_own_functions(tmp_path: Path, pool_start_method: str) -> None:
    done = run_script(
        """
        import asyncio
        import shoal

        scale = 3

        def triple(x):
            return x * scale

        async def main(pool):
            one = await pool.apply_async(triple, (2,))
            many = await asyncio.gather(*(pool.submit(lambda v: v + 1, n) for n in range(3)))
            streamed = [x async for x in pool.imap(triple, range(4))]
            return one, many, streamed

        with shoal.Pool(2, start_method=START) as pool:
            print(asyncio.run(main(pool)))
        """,
        tmp_path,
        pool_start_method,
    )
    assert done.stdout.splitlines() == ["(6, [1, 2, 3], [0, 3, 6, 9])"]
