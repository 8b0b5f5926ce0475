"""``shoal.Queue``: a drop-in for ``multiprocessing.Queue`` on shared memory.

Messages are pickled here and moved by the Rust engine through a ring in a memfd segment.
There is no feeder thread: ``put`` copies the message into shared memory before it returns.
"""

from __future__ import annotations

import os
import pickle
import queue as _stdlib_queue
import threading
from collections.abc import Iterable
from multiprocessing.reduction import DupFd
from typing import Any, Generic, TypeVar

from shoal._shoal import DEFAULT_QUEUE_CAPACITY, Arena, QueueCore
from shoal._wire.buffers import (
    MAGIC,
    OutOfBand,
    check_arena_bytes,
    default_arena_bytes,
    framed,
    pack,
    unpack,
)
from shoal._wire.pickling import loads

__all__ = ["Queue", "SimpleQueue"]

T = TypeVar("T")

_plain_dumps = pickle.dumps

# How a message body is encoded, stored by the engine beside the bytes.
_PICKLED = 0
_RAW_BYTES = 1  # a `bytes` object sent as is: no pickling, one copy each way


def _timeout(block: bool, timeout: float | None) -> float | None:
    """The engine's wait: None forever, 0.0 not at all, otherwise seconds."""
    if not block:
        return 0.0
    return timeout


class Queue(Generic[T]):
    """A process-safe FIFO queue in shared memory, with ``multiprocessing.Queue``'s API.

    Any number of processes may put and get. Hand the queue to other processes as a
    ``multiprocessing.Process`` argument, in a ``Pool``'s ``initargs`` (fork, spawn or
    forkserver), or inside any pickled message: it travels as a descriptor, never by copy.

    Args:
        maxsize: the most messages the queue holds; ``put`` waits (or raises ``queue.Full``)
            beyond it. ``0`` or less: no limit but ``capacity``.
        capacity: the size of the shared ring in bytes (default 64 MiB, backed by memory
            only as it is used). ``put`` waits while the ring is full. A message larger
            than the ring still gets through, in pieces.
        arena_bytes: the most shared memory the queue may hold for large buffers (numpy
            arrays and other pickle protocol 5 buffers of 64 KiB or more): they are copied
            once into it by ``put`` and rebuilt over it, read-only and without a copy, by
            ``get`` in any process. ``None``: half of this machine's memory, used only as
            buffers travel. Past it they go through the ring, with a warning.

    Example:
        >>> from shoal import Queue
        >>> q = Queue()
        >>> q.put({"answer": 42})
        >>> q.get(timeout=1)
        {'answer': 42}
        >>> q.put_many([1, 2, 3]); q.get_many()
        [1, 2, 3]
    """

    def __init__(
        self, maxsize: int = 0, *, capacity: int | None = None, arena_bytes: int | None = None
    ) -> None:
        size = DEFAULT_QUEUE_CAPACITY if capacity is None else capacity
        check_arena_bytes(arena_bytes)
        self._core = QueueCore(size, max(maxsize, 0))
        self._maxsize = max(maxsize, 0)
        self._arena: Arena | None = Arena(arena_bytes or default_arena_bytes())
        self._local = threading.local()

    @classmethod
    def _attach(cls, core: QueueCore, arena: Arena) -> Queue[T]:
        self = cls.__new__(cls)
        self._core = core
        self._maxsize = core.max_items
        self._arena = arena
        self._local = threading.local()
        return self

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # DupFd hands the descriptors to a child being started (spawn, forkserver) or,
        # at any other time, through multiprocessing's resource sharer.
        ring = self._core.fileno()  # ValueError once closed
        if self._arena is None:
            raise ValueError("a closed queue cannot be sent to another process")
        return (_rebuild, (DupFd(ring), DupFd(self._arena.fileno()), type(self)))

    def _encode(self, obj: object) -> tuple[int, bytes]:
        if type(obj) is bytes:
            return _RAW_BYTES, obj
        # One collector per thread: threads of a process may put at the same time.
        try:
            sink: OutOfBand | None = self._local.sink
        except AttributeError:
            sink = self._local.sink = None if self._arena is None else OutOfBand(self._arena)
        if sink is not None and not sink.blocks:
            # The common case inline (a queue moves millions of small messages a second):
            # the standard pickler takes it and nothing goes out of band.
            try:
                data = _plain_dumps(obj, 5, buffer_callback=sink)
            except Exception:
                sink.restart()  # the whole way, with pickle's fallbacks, below
            else:
                return _PICKLED, framed(data, sink)[0] if sink.blocks else data
        return _PICKLED, pack(obj, sink, detached=False)[0]

    def _decode(self, tag: int, body: bytes) -> Any:
        if tag == _RAW_BYTES:
            return body
        if body.startswith(MAGIC):
            return unpack(body, self._arena, own=True)[0]
        return loads(body)

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else f"size={self._core.qsize()}"
        return f"<shoal.Queue {state} maxsize={self._maxsize}>"

    def put(self, obj: T, block: bool = True, timeout: float | None = None) -> None:
        """Puts ``obj`` at the back of the queue.

        Waits for room when ``block`` is true, up to ``timeout`` seconds (``None``:
        forever); raises ``queue.Full`` when there is none. Raises
        ``shoal.errors.PicklingError`` (naming the part that failed) if ``obj`` cannot be
        pickled, and ``ValueError`` after ``close()``.
        """
        tag, body = self._encode(obj)
        self._core.put(tag, body, _timeout(block, timeout))

    def put_nowait(self, obj: T) -> None:
        """``put(obj, block=False)``."""
        self.put(obj, False)

    def put_many(self, objs: Iterable[T], block: bool = True, timeout: float | None = None) -> None:
        """Puts several objects in order, in one operation.

        When they fit in the ring together they go in all at once or not at all
        (``queue.Full``); a batch larger than the ring goes in message by message.
        """
        self._core.put_many([self._encode(obj) for obj in objs], _timeout(block, timeout))

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Removes and returns the object at the front of the queue.

        Waits when ``block`` is true, up to ``timeout`` seconds (``None``: forever); raises
        ``queue.Empty`` when nothing came.
        """
        tag, body = self._core.get(_timeout(block, timeout))
        result: T = self._decode(tag, body)
        return result

    def get_nowait(self) -> T:
        """``get(block=False)``."""
        return self.get(False)

    def get_many(
        self, max_messages: int = 1000, block: bool = True, timeout: float | None = None
    ) -> list[T]:
        """Returns between 1 and ``max_messages`` objects: waits for the first as ``get``
        does, then takes those already waiting, in one operation."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        items = self._core.get_many(max_messages, _timeout(block, timeout))
        return [self._decode(tag, body) for tag, body in items]

    def qsize(self) -> int:
        """The number of messages waiting: a snapshot, as in multiprocessing."""
        return self._core.qsize()

    def empty(self) -> bool:
        """Whether no message is waiting (a snapshot)."""
        try:
            return self._core.qsize() == 0
        except ValueError:
            # Closed: as multiprocessing's empty(), which polls its closed pipe.
            raise OSError("handle is closed") from None

    def full(self) -> bool:
        """Whether ``maxsize`` messages are waiting (a snapshot; never true without one)."""
        return self._core.full()

    def close(self) -> None:
        """Ends this process's use of the queue: later calls here raise ``ValueError``
        (``empty()``, ``OSError``, as multiprocessing's).

        Messages already put stay in the queue for other processes. The shared memory
        is freed when the last process lets go. As with multiprocessing, whose
        ``close()`` stops the feeder thread a ``put`` starts: a handle that never put
        only stops taking ``put`` and ``get``, and still answers ``empty()``, ``qsize()``
        and ``full()``.
        """
        if not self._core.put_any:
            self._core = _Closed(self._core)  # type: ignore[assignment]
            return
        self._core.close()
        # Its arena too: what was already received keeps its blocks mapped.
        self._arena = None
        self._local = threading.local()

    def join_thread(self) -> None:
        """Present for compatibility. There is no feeder thread to wait for: every ``put``
        has reached shared memory when it returns. Raises ``ValueError`` before ``close()``,
        as multiprocessing requires closing first."""
        if not self._core.closed:
            raise ValueError("join_thread() can only be called after close()")

    def cancel_join_thread(self) -> None:
        """Present for compatibility: nothing is ever left to flush, so this does nothing."""


class SimpleQueue(Queue[T]):
    """``multiprocessing.SimpleQueue``'s name for a shoal ``Queue`` with no size limit:
    ``put``, ``get``, ``empty`` and ``close`` (the rest of ``Queue``'s methods work too).

    Example:
        >>> from shoal import SimpleQueue
        >>> q = SimpleQueue()
        >>> q.put("x"); q.empty(), q.get(), q.empty()
        (False, 'x', True)
    """

    def __init__(self, *, capacity: int | None = None, arena_bytes: int | None = None) -> None:
        super().__init__(0, capacity=capacity, arena_bytes=arena_bytes)

    def __repr__(self) -> str:
        return super().__repr__().replace("shoal.Queue", "shoal.SimpleQueue", 1)


class _Closed:
    """A closed handle that never put: it refuses to move messages but still counts
    them (see ``Queue.close``)."""

    closed = True
    put_any = True  # (a second close() closes it for good)

    def __init__(self, core: QueueCore) -> None:
        self._open = core
        self.qsize, self.full, self.max_items = core.qsize, core.full, core.max_items

    def __getattr__(self, name: str) -> Any:
        raise ValueError("the queue is closed")

    def close(self) -> None:
        self._open.close()


def _rebuild(dupfd: Any, arena_dupfd: Any, cls: type[Queue[Any]] = Queue) -> Queue[Any]:
    fd = arena_dupfd.detach()
    try:
        arena = Arena.attach(fd)
    finally:
        os.close(fd)  # attach keeps a duplicate of its own
    return cls._attach(QueueCore.from_fd(dupfd.detach()), arena)


Queue.__module__ = SimpleQueue.__module__ = "shoal"
Full = _stdlib_queue.Full
Empty = _stdlib_queue.Empty
