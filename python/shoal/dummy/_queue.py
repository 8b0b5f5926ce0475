"""The thread twin of ``shoal.Queue``: ``queue.Queue`` with the same extra methods."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable
from typing import TypeVar

__all__ = ["Queue"]

T = TypeVar("T")


class Queue(queue.Queue[T]):
    """A thread-safe FIFO with ``shoal.Queue``'s API (``put_many``, ``get_many``,
    ``close``...), for threads of one process. Objects are passed by reference.

    Example:
        >>> q = Queue(maxsize=2)
        >>> q.put("a"); q.get()
        'a'
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the queue is closed")

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """As ``queue.Queue.put``; raises ``ValueError`` after ``close()``."""
        self._check_open()
        super().put(item, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """As ``queue.Queue.get``; raises ``ValueError`` after ``close()``."""
        self._check_open()
        return super().get(block, timeout)

    def put_many(self, objs: Iterable[T], block: bool = True, timeout: float | None = None) -> None:
        """Puts several objects in order: all at once or not at all (``queue.Full``) when
        they fit within ``maxsize``, otherwise one by one."""
        self._check_open()
        items = list(objs)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        if 0 < self.maxsize < len(items):
            # Larger than the queue can ever hold: one by one, as shoal.Queue does.
            for item in items:
                remaining = None if deadline is None else deadline - time.monotonic()
                self.put(item, block, remaining)
            return
        with self.not_full:
            while self.maxsize > 0 and self._qsize() + len(items) > self.maxsize:
                remaining = None if deadline is None else deadline - time.monotonic()
                if not block or (remaining is not None and remaining <= 0):
                    raise queue.Full
                self.not_full.wait(remaining)
            for item in items:
                self._put(item)
            self.unfinished_tasks += len(items)
            self.not_empty.notify_all()

    def get_many(
        self, max_messages: int = 1000, block: bool = True, timeout: float | None = None
    ) -> list[T]:
        """Waits for one object as ``get`` does, then takes up to ``max_messages`` in all."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        items = [self.get(block, timeout)]
        with self.mutex:
            while len(items) < max_messages and self._qsize():
                items.append(self._get())
            self.not_full.notify_all()
        return items

    def close(self) -> None:
        """Ends use of the queue: later ``put``/``get`` raise ``ValueError``."""
        self._closed = True

    def join_thread(self) -> None:
        """Present for compatibility; raises ``ValueError`` before ``close()``."""
        if not self._closed:
            raise ValueError("join_thread() can only be called after close()")

    def cancel_join_thread(self) -> None:
        """Present for compatibility; does nothing."""
