"""``shoal.JoinableQueue``: a shoal ``Queue`` that counts unfinished items, with
``multiprocessing.JoinableQueue``'s ``task_done`` and ``join``.

The count is a shoal ``Semaphore`` beside the queue: ``put`` raises it before the item is
in the queue (so a consumer's ``task_done`` never finds it short), ``task_done`` lowers it,
and ``join`` waits for zero. A consumer killed between ``get`` and ``task_done`` leaves its
item counted, as with multiprocessing: ``join`` then waits until its timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final, TypeVar

from shoal._mp.locks import Semaphore
from shoal._mp.queues import Queue

__all__ = ["JoinableQueue"]

T = TypeVar("T")

# join() looks at the count this often at first, then less often up to the cap: an item
# usually finishes soon after the last get, and a long join costs almost nothing.
_FIRST_LOOK: Final = 0.0002
_LOOK_CAP: Final = 0.02


class JoinableQueue(Queue[T]):
    """A shoal ``Queue`` whose ``join`` waits until every item put has been marked done
    with ``task_done``.

    Example:
        >>> from shoal import JoinableQueue
        >>> q = JoinableQueue()
        >>> q.put("job")
        >>> q.get(), q.task_done()
        ('job', None)
        >>> q.join()  # every item is done: returns at once
        True
        >>> q.task_done()
        Traceback (most recent call last):
        ValueError: task_done() called too many times
    """

    def __init__(
        self, maxsize: int = 0, *, capacity: int | None = None, arena_bytes: int | None = None
    ) -> None:
        super().__init__(maxsize, capacity=capacity, arena_bytes=arena_bytes)
        self._unfinished = Semaphore(0)

    def put(self, obj: T, block: bool = True, timeout: float | None = None) -> None:
        """Puts ``obj`` at the back of the queue and counts it unfinished."""
        self._unfinished.release()
        try:
            super().put(obj, block, timeout)
        except BaseException:
            self._unfinished.acquire(block=False)
            raise

    def put_many(self, objs: Iterable[T], block: bool = True, timeout: float | None = None) -> None:
        """Puts each of ``objs`` in order, each counted unfinished."""
        for obj in objs:
            self.put(obj, block, timeout)

    def task_done(self) -> None:
        """Marks one item got from the queue as finished.

        Raises:
            ValueError: more calls than items put.
        """
        if not self._unfinished.acquire(block=False):
            raise ValueError("task_done() called too many times")

    def join(self, timeout: float | None = None) -> bool:
        """Waits until every item put has been marked done; ``False`` if ``timeout``
        seconds passed first (multiprocessing's ``join`` takes no timeout and returns
        ``None``; this one returns ``True`` then)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_LOOK
        while self._unfinished.get_value() > 0:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, _LOOK_CAP)
        return True

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        queue_rebuild, queue_args = super().__reduce__()
        return (_rebuild, (queue_rebuild, queue_args, self._unfinished))

    def __repr__(self) -> str:
        text = super().__repr__().replace("shoal.Queue", "shoal.JoinableQueue", 1)
        return text[:-1] + f" unfinished={self._unfinished.get_value()}>"


def _rebuild(queue_rebuild: Any, queue_args: tuple[Any, ...], unfinished: Semaphore) -> Any:
    queue = queue_rebuild(*queue_args)
    queue._unfinished = unfinished
    return queue


JoinableQueue.__module__ = "shoal"
