"""``shoal.shared(obj)``: a large object placed in shared memory once, read by every task.

The object is pickled (protocol 5) with its buffers out of band, and the buffers are
copied once into a memfd of their own. The handle pickles as a small descriptor: the
creating process's pid, the memfd's descriptor number and inode, where each buffer lies,
and the pickle's in-band bytes. A process that unpickles it opens the memfd through
``/proc/<pid>/fd/<n>`` (checking the inode), maps it read-only and rebuilds the object
over the mapping; it does so once and reuses it for every later task.

The memory stays valid for as long as any process maps it: the creating process closes
its descriptor when the handle is collected (or :meth:`Shared.release` is called), and the
kernel frees the memory once the last mapping is gone.

A backend whose workers may run on other machines (Ray) pickles tasks inside
:func:`placing`: a handle then pickles as what the backend's placer returns (the object
put in the cluster's object store once), and the workers rebuild it from there.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import pickle
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from shoal._wire.pickling import dumps_detached

__all__ = ["Shared", "placing", "shared", "stand_in"]

T = TypeVar("T")

# Buffers start on cache-line boundaries: aligned arrays read faster.
_ALIGN = 64
# Objects a process keeps rebuilt (least recently used dropped first; one still referenced
# by a task stays valid, only no longer cached).
_CACHE_SIZE = 16

_cache: collections.OrderedDict[tuple[int, int, int], Shared[Any]] = collections.OrderedDict()
_cache_lock = threading.Lock()

Reduction = tuple[Any, tuple[Any, ...]]
_placer = threading.local()  # .place: Callable[[Shared], Reduction] while a backend pickles


@contextlib.contextmanager
def placing(place: Callable[[Shared[Any]], Reduction]) -> Iterator[None]:
    """While this block pickles in this thread, a handle pickles as ``place(handle)``
    (a ``__reduce__`` value): how a cluster backend sends handles through its own store.

    >>> handle = shared([1, 2])
    >>> with placing(lambda h: (list, (h.value,))):
    ...     pickle.loads(pickle.dumps(handle))
    [1, 2]
    """
    before = getattr(_placer, "place", None)
    _placer.place = place
    try:
        yield
    finally:
        _placer.place = before


def stand_in(value: T, reduction: Reduction) -> Shared[T]:
    """A handle over ``value`` as it arrived from a cluster's store, which pickles again as
    ``reduction`` (the placer's answer it came from).

    >>> stand_in([1], (list, ([1],))).value
    [1]
    """
    handle: Shared[T] = Shared.__new__(Shared)
    handle._value = value
    handle._reduction = reduction
    return handle


class Shared(Generic[T]):
    """A large object in shared memory, for tasks to read without copying it.

    Made by :func:`shared`; pass it to tasks as an argument (or inside one, or in a
    closure) and read it with :attr:`value`. In the creating process ``value`` is the
    original object; in a worker it is the same object rebuilt over the shared memory,
    once per worker: numpy arrays arrive read-only, with no copy.
    """

    __slots__ = ("__weakref__", "_closer", "_reduction", "_value")

    _value: T
    _reduction: Reduction
    _closer: weakref.finalize[[int], Shared[Any]]

    @property
    def value(self) -> T:
        """The object."""
        return self._value

    def release(self) -> None:
        """Closes the creating process's descriptor now rather than when the handle is
        collected. Processes that already read the object keep it; others can no longer
        attach (they get ``ValueError``)."""
        closer = getattr(self, "_closer", None)
        if closer is not None:
            closer()

    def __reduce__(self) -> Reduction:
        place = getattr(_placer, "place", None)
        return self._reduction if place is None else place(self)

    def __repr__(self) -> str:
        return f"<shoal.Shared {type(self._value).__name__}>"


def shared(obj: T) -> Shared[T]:
    """Places ``obj`` in shared memory once and returns a handle that tasks read it
    through (:attr:`Shared.value`), in every worker of every pool, with no per-task or
    per-worker copy of its buffers (numpy arrays, anything pickle protocol 5 sends out of
    band; the rest of the object is small and rebuilt once per worker).

    Example:
        >>> import shoal, numpy as np
        >>> table = shoal.shared(np.arange(1_000_000))
        >>> def total(h, lo, hi):
        ...     return int(h.value[lo:hi].sum())
        >>> with shoal.Pool(2) as pool:
        ...     pool.starmap(total, [(table, 0, 10), (table, 10, 20)])
        [45, 145]
    """
    buffers: list[pickle.PickleBuffer] = []

    def keep(buffer: pickle.PickleBuffer) -> bool:
        try:
            buffer.raw()
        except BufferError:
            return True  # not contiguous: stays in the pickle
        buffers.append(buffer)
        return False

    inband = dumps_detached(obj, _Collect(keep))
    layout: list[tuple[int, int]] = []
    size = 0
    for buffer in buffers:
        length = buffer.raw().nbytes
        layout.append((size, length))
        size += (length + _ALIGN - 1) // _ALIGN * _ALIGN
    fd = os.memfd_create("shoal-shared", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, max(size, 1))
        if size:
            with mmap.mmap(fd, size) as memory, memoryview(memory) as view:
                for buffer, (offset, length) in zip(buffers, layout, strict=True):
                    view[offset : offset + length] = buffer.raw()
        inode = os.fstat(fd).st_ino
    except BaseException:
        os.close(fd)
        raise
    handle: Shared[T] = Shared.__new__(Shared)
    handle._value = obj
    handle._reduction = (_attach, (os.getpid(), fd, inode, size, tuple(layout), inband))
    handle._closer = weakref.finalize(handle, _close_quietly, fd)
    return handle


class _Collect:
    """A buffer sink (see ``shoal._wire.pickling.BufferSink``) over a plain callback."""

    __slots__ = ("_keep",)

    def __init__(self, keep: Any) -> None:
        self._keep = keep

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        return bool(self._keep(buffer))

    def restart(self) -> None:
        raise RuntimeError("shoal.shared pickles only once")


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _attach(
    pid: int,
    fd: int,
    inode: int,
    size: int,
    layout: tuple[tuple[int, int], ...],
    inband: bytes,
) -> Shared[Any]:
    """The handle as another process rebuilds it (once; later ones come from a cache)."""
    key = (pid, fd, inode)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    try:
        own = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ValueError(
            f"cannot attach to a shoal.shared object of process {pid} ({exc.strerror}): "
            "its creator must still be running and hold it"
        ) from exc
    try:
        if os.fstat(own).st_ino != inode:
            raise ValueError(
                f"cannot attach to a shoal.shared object of process {pid}: it was released"
            )
        # Populated at once: one system call instead of a page fault per page read later
        # (a 1 GiB object is 262,144 of them).
        flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
        memory = mmap.mmap(own, max(size, 1), flags=flags, prot=mmap.PROT_READ)
    finally:
        os.close(own)
    view = memoryview(memory)
    buffers = [view[offset : offset + length] for offset, length in layout]
    handle: Shared[Any] = Shared.__new__(Shared)
    handle._value = pickle.loads(inband, buffers=buffers)
    handle._reduction = (_attach, (pid, fd, inode, size, layout, inband))
    with _cache_lock:
        _cache[key] = handle
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return handle
