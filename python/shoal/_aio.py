"""asyncio's way into a Pool's results: ``await`` on an ``AsyncResult`` and ``async for``
over ``imap``, with no thread per call.

A waiting coroutine parks on an ``asyncio.Future`` of its own loop; the thread that settles
the shoal result (the pool's result thread) wakes it with ``call_soon_threadsafe``, which
only schedules work in the loop. A ``PoolFuture`` needs none of this: it is a
``concurrent.futures.Future``, which ``asyncio.wrap_future`` already bridges.

Example:
    >>> import asyncio, shoal
    >>> async def main(pool):
    ...     return await asyncio.gather(*(pool.apply_async(abs, (-n,)) for n in range(3)))
    >>> with shoal.Pool(2) as pool:
    ...     asyncio.run(main(pool))
    [0, 1, 2]
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from multiprocessing import TimeoutError as MpTimeoutError
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from shoal.pool._results import AsyncResult, IMapIterator

__all__ = ["iterate", "result_of"]

R = TypeVar("R")


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # (the awaiting task may have been cancelled meanwhile)
        waiter.set_result(None)


def _waker(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> functools.partial[Any]:
    """What another thread calls to wake ``waiter``'s coroutine."""
    return functools.partial(_wake, loop, waiter)


def _wake(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, waiter)


async def result_of(result: AsyncResult[R]) -> R:
    """The value of ``result`` once it is in, or its task's exception."""
    if not result.ready():
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        result._when_ready(_waker(loop, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            result._take_back()
            raise
    return result.get(0)


async def iterate(results: IMapIterator[R]) -> AsyncIterator[R]:
    """The values of an ``imap`` iterator, as they come."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            run = results._take_rest(0)
        except MpTimeoutError:  # nothing yet: park until something arrives
            waiter: asyncio.Future[None] = loop.create_future()
            if results._wake_when_ready(_waker(loop, waiter)):
                await waiter
            continue
        if run is None:
            return
        for value in run:
            yield value
