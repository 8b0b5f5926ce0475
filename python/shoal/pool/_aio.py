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
import weakref
from collections import deque
from collections.abc import AsyncIterator
from multiprocessing import TimeoutError as MpTimeoutError
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from shoal.pool._imap import IMapIterator
    from shoal.pool._results import AsyncResult

__all__ = ["iterate", "result_of"]

R = TypeVar("R")


class _LoopWaker:
    """Wakes parked coroutines of one loop from other threads, many per hop: a settled
    waiter joins a list, and only the first of a burst schedules the loop to run it
    (one ``call_soon_threadsafe``, one write to the loop's self-pipe, per burst rather
    than per result)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready: deque[asyncio.Future[None]] = deque()
        self._scheduled = False

    def wake(self, waiter: asyncio.Future[None]) -> None:
        """From any thread: ``waiter`` is to be settled in its loop."""
        self._ready.append(waiter)
        if not self._scheduled:
            self._scheduled = True
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        # In the loop. Cleared before the list is emptied: a waiter added meanwhile
        # either is taken by this pass or schedules the next.
        self._scheduled = False
        ready = self._ready
        while ready:
            waiter = ready.popleft()
            if not waiter.done():  # (its task may have been cancelled meanwhile)
                waiter.set_result(None)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = (
    weakref.WeakKeyDictionary()
)


def _waker(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> functools.partial[Any]:
    """What another thread calls to wake ``waiter``'s coroutine."""
    waker = _wakers.get(loop)
    if waker is None:
        waker = _wakers.setdefault(loop, _LoopWaker(loop))
    return functools.partial(waker.wake, waiter)


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
