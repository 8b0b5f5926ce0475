"""``shoal.Value``, ``shoal.Array``, ``shoal.RawValue`` and ``shoal.RawArray``:
multiprocessing's shared ctypes objects, each in a memfd segment of its own.

A raw object is a ctypes object (of a subclass of the type asked for) laid over a shared
mapping; it pickles as its segment's descriptor, so it travels where shoal's locks do. The
synchronized ones wrap it in ``multiprocessing.sharedctypes``' own wrappers (``value``,
``get_lock()``, ``get_obj()``, slices...) with a shoal ``RLock`` by default, so a process
killed while holding that lock never wedges the others.

Each object holds one descriptor open for as long as it lives (to hand it to new processes).
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing.context
import multiprocessing.sharedctypes
import os
from collections.abc import Sequence
from multiprocessing.reduction import DupFd
from multiprocessing.sharedctypes import synchronized
from typing import Any

from shoal._mp.locks import RLock

__all__ = ["Array", "RawArray", "RawValue", "Value"]

# multiprocessing's type codes ("i", "d", "c"...), so both accept the same ones.
_TYPECODES: dict[str, Any] = vars(multiprocessing.sharedctypes)["typecode_to_type"]

_shared_types: dict[Any, Any] = {}


class _Segment:
    """A memfd and its mapping: the memory a shared ctypes object lies on."""

    def __init__(self, size: int, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("shoal-sharedctypes", os.MFD_CLOEXEC)
            os.ftruncate(fd, max(size, 1))
        self.fd = fd
        self.map = mmap.mmap(fd, max(size, 1))

    def __del__(self) -> None:
        os.close(self.fd)


def _reduce_shared(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    if multiprocessing.context.get_spawning_popen() is None:
        raise RuntimeError(
            "shared ctypes objects should only be shared between processes through inheritance"
        )
    base = type(obj).__mro__[1]
    # An array type cannot be pickled by name: send its item type and length.
    item, length = (base._type_, base._length_) if issubclass(base, ctypes.Array) else (base, None)
    return (_rebuild, (item, length, DupFd(obj._shoal_segment.fd)))


def _shared_type(base: Any) -> Any:
    """A subclass of ``base`` whose objects pickle as their shared segment."""
    cls = _shared_types.get(base)
    if cls is None:
        cls = type(base.__name__, (base,), {"__reduce__": _reduce_shared, "__slots__": ()})
        cls.__module__ = base.__module__
        _shared_types[base] = cls
    return cls


def _lay_over(base: Any, segment: _Segment) -> Any:
    obj = _shared_type(base).from_buffer(segment.map)
    obj._shoal_segment = segment  # keeps the mapping (and the descriptor) alive
    return obj


def _rebuild(item: Any, length: int | None, dupfd: Any) -> Any:
    base = item if length is None else item * length
    return _lay_over(base, _Segment(ctypes.sizeof(base), dupfd.detach()))


def _ctype(typecode_or_type: str | type) -> Any:
    if isinstance(typecode_or_type, str):
        try:
            return _TYPECODES[typecode_or_type]
        except KeyError:
            codes = "".join(sorted(_TYPECODES))
            raise TypeError(
                f"bad typecode {typecode_or_type!r} (use a ctypes type or one of {codes!r})"
            ) from None
    return typecode_or_type


def RawValue(typecode_or_type: str | type, *args: Any) -> Any:
    """A ctypes object in shared memory, with no lock.

    Example:
        >>> from shoal import RawValue
        >>> v = RawValue("i", 7)
        >>> v.value += 1; v.value
        8
    """
    base = _ctype(typecode_or_type)
    obj = _lay_over(base, _Segment(ctypes.sizeof(base)))
    obj.__init__(*args)
    return obj


def RawArray(typecode_or_type: str | type, size_or_initializer: int | Sequence[Any]) -> Any:
    """A ctypes array in shared memory, with no lock: ``size`` zeros, or a copy of the
    initializer.

    Example:
        >>> from shoal import RawArray
        >>> RawArray("d", 3)[:], RawArray("i", [1, 2])[:]
        ([0.0, 0.0, 0.0], [1, 2])
    """
    item = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int):
        length, values = size_or_initializer, None
    else:
        values = list(size_or_initializer)
        length = len(values)
    base = item * length
    obj = _lay_over(base, _Segment(ctypes.sizeof(base)))
    if values is not None:
        obj.__init__(*values)
    return obj


def _with_lock(obj: Any, lock: Any) -> Any:
    if lock is False:
        return obj
    if lock in (True, None):
        lock = RLock()
    if not hasattr(lock, "acquire"):
        raise AttributeError(f"{lock!r} has no method 'acquire'")
    return synchronized(obj, lock)


def Value(typecode_or_type: str | type, *args: Any, lock: Any = True) -> Any:
    """A shared ctypes object behind a lock (a shoal ``RLock`` unless ``lock`` is given;
    ``lock=False`` gives the raw object), with ``multiprocessing.Value``'s API.

    Example:
        >>> from shoal import Value
        >>> counter = Value("i", 0)
        >>> with counter.get_lock():
        ...     counter.value += 1
        >>> counter.value
        1
    """
    return _with_lock(RawValue(typecode_or_type, *args), lock)


def Array(
    typecode_or_type: str | type, size_or_initializer: int | Sequence[Any], *, lock: Any = True
) -> Any:
    """A shared ctypes array behind a lock, with ``multiprocessing.Array``'s API.

    Example:
        >>> from shoal import Array
        >>> squares = Array("i", 4)
        >>> squares[:] = [i * i for i in range(4)]
        >>> squares[:], len(squares)
        ([0, 1, 4, 9], 4)
    """
    return _with_lock(RawArray(typecode_or_type, size_or_initializer), lock)
