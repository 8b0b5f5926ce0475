"""Large buffers out of band: pickle protocol 5 with the buffers in a shared arena.

A message whose pickle carries buffers of :data:`THRESHOLD` bytes or more (numpy arrays,
``pickle.PickleBuffer``, anything whose ``__reduce_ex__(5)`` hands out a buffer) travels
as the pickle plus, per buffer, the ``(offset, length)`` of a block of the arena the
sender copied it into. The receiver rebuilds the objects over read-only
:class:`~shoal._shoal.ShmBuffer` views of those blocks, without copying them.

Wire format: a plain pickle when nothing went out of band (it starts with the protocol
opcode ``0x80``), else ``MAGIC``, the count and ``(offset, length)`` pairs of the
out-of-band buffers, the same for the stored ``bytes``/``bytearray`` objects the pickle
names by persistent id, then the pickle.

Example:
    >>> import array
    >>> from shoal._shoal import Arena
    >>> arena = Arena(1 << 26)
    >>> big = pickle.PickleBuffer(array.array("d", range(100_000)))
    >>> payload, blocks = pack([big], OutOfBand(arena))
    >>> len(blocks), len(payload) < 200
    (1, True)
    >>> (view,), shared = unpack(payload, arena, own=True)
    >>> bytes(memoryview(view)[:8]) == bytes(array.array("d", [0.0]))
    True
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
from typing import TYPE_CHECKING, Any, Final, cast

from shoal._shoal import ARENA_MIN_BLOCK, Arena, ShmBuffer
from shoal._wire.pickling import REFUSALS, dumps, dumps_detached

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "MAGIC",
    "THRESHOLD",
    "OutOfBand",
    "check_arena_bytes",
    "default_arena_bytes",
    "framed",
    "pack",
    "unpack",
]

THRESHOLD: Final = ARENA_MIN_BLOCK
"""Buffers smaller than the arena's smallest block (64 KiB) stay in the pickle: below it,
a block's bookkeeping costs more than the copy it saves, and most of the block would be
wasted."""

MAGIC: Final = b"SHOB"
_COUNT: Final = struct.Struct("<I")
_plain_dumps: Final = pickle.dumps
_PAIR: Final = struct.Struct("<QQ")


class OutOfBand:
    """The pickler's ``buffer_callback``: puts each large, contiguous buffer into the arena
    and remembers its block; anything else stays in the pickle. When the arena has no
    room, the buffer stays in the pickle too, with a warning the first time."""

    __slots__ = ("arena", "blocks", "stored")

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        # Buffers the pickle refers to in order (protocol 5's out-of-band buffers).
        self.blocks: list[tuple[int, int]] = []
        # bytes and bytearray objects the pickle refers to by position (persistent ids).
        self.stored: list[tuple[int, int]] = []

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:
            return True  # not contiguous: pickled in band, as without an arena
        if raw.nbytes < THRESHOLD:
            return True
        return self._place(raw, self.blocks) is None

    def store(self, data: bytes | bytearray) -> int | None:
        """Copies ``data`` into a block and returns its position among the stored ones,
        or None when the arena has no room (it then stays in the pickle)."""
        return self._place(data, self.stored)

    def _place(self, data: Any, into: list[tuple[int, int]]) -> int | None:
        """Copies ``data`` into a new block listed in ``into``; its position there, or
        None (with a warning, once) when the arena has no room."""
        block = self.arena.put(data)
        if block is None:
            _warn_full(self.arena, memoryview(data).nbytes)
            return None
        into.append(block)
        return len(into) - 1

    def restart(self) -> None:
        """Frees what this pickling put in the arena: it is starting over, or failed."""
        for offset, _ in (*self.blocks, *self.stored):
            self.arena.free(offset)
        self.blocks.clear()
        self.stored.clear()


_warned_full = False


def _warn_full(arena: Arena, size: int) -> None:
    global _warned_full
    if _warned_full:
        return
    _warned_full = True
    stats = arena.stats()
    warnings.warn(
        f"shoal's shared memory arena has no free block of {size:,} bytes "
        f"({stats['in_use']:,} of {stats['capacity']:,} bytes in use): large buffers are "
        "copied through the rings instead, which is slower. Objects kept alive hold their "
        "blocks; raise the budget with arena_bytes= (Pool or Queue).",
        ResourceWarning,
        stacklevel=4,
    )


def check_arena_bytes(arena_bytes: int | None) -> None:
    """``ValueError`` unless ``arena_bytes`` is ``None`` or a positive int.

    >>> check_arena_bytes(0)
    Traceback (most recent call last):
    ...
    ValueError: arena_bytes must be a positive int or None, not 0
    """
    if arena_bytes is None:
        return
    if isinstance(arena_bytes, bool) or not isinstance(arena_bytes, int) or arena_bytes < 1:
        raise ValueError(f"arena_bytes must be a positive int or None, not {arena_bytes!r}")


def default_arena_bytes() -> int:
    """The default budget of an arena: half of this machine's memory. It is the size of a
    sparse segment, so it costs memory only as large buffers travel.

    >>> default_arena_bytes() >= 64 << 20
    True
    """
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        total = 8 << 30
    return max(total // 2, 64 << 20)


def pack(obj: object, into: OutOfBand | None, *, detached: bool = True) -> tuple[bytes, list[int]]:
    """Pickles ``obj`` for a process attached to ``into``'s arena; returns the payload and
    the offsets of the blocks it placed (they belong to this process until a receiver
    adopts them or they are freed). Without one, everything goes in the pickle.

    ``into`` is reused from call to call (one per sender, not shared between threads
    that may pickle at the same time): most messages never need it, and making one per
    message would cost more than they do. ``detached``: as for a pool's workers, objects
    of ``__main__`` go by value (:func:`shoal._wire.pickling.dumps_detached`); otherwise by
    reference, as multiprocessing's queues send them.

    Raises:
        shoal.errors.PicklingError: as :func:`shoal._wire.pickling.dumps` does; nothing is left
            in the arena then.
    """
    encode = dumps_detached if detached else dumps
    if into is None:
        return encode(obj), []
    if into.blocks or into.stored:
        into.blocks.clear()
        into.stored.clear()
    try:
        # The common case first, with no call in between: the standard pickler takes it
        # and nothing names __main__ (which a detached receiver cannot resolve).
        try:
            data = _plain_dumps(obj, 5, buffer_callback=into)
        except REFUSALS:
            data = _REFUSED
        if data is _REFUSED or (
            len(data) >= THRESHOLD and not into.blocks and _has_large_bytes(data)
        ):
            # Refused (a memoryview, say), or large because of bytes or bytearray
            # objects: the pickler that sends those out of band too.
            into.restart()
            data = _buffers_dumps(obj, into)
        if data is _REFUSED or (detached and b"__main__" in data):
            into.restart()
            data = encode(obj, into)
    except BaseException:
        into.restart()
        raise
    return framed(data, into)


_REFUSED: Final = b"\x00refused"


class _BuffersPickler(pickle.Pickler):
    """The standard pickler, also sending ``memoryview`` objects (which it refuses) as
    protocol-5 buffers, and ``bytes`` and ``bytearray`` of :data:`THRESHOLD` bytes or more
    through the arena by reference (persistent ids: the C pickler never asks
    ``reducer_override`` about ``bytes``). The receiver gets a read-only ``memoryview``
    over shared memory without a copy, and ``bytes``/``bytearray`` copied out of it once
    (they must own their memory)."""

    def __init__(self, file: io.BytesIO, into: OutOfBand) -> None:
        super().__init__(file, 5, buffer_callback=into)
        self._into = into

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is memoryview:
            if obj.contiguous:
                return memoryview, (pickle.PickleBuffer(obj),)
            return memoryview, (obj.tobytes(),)
        return NotImplemented

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if (kind is bytes or kind is bytearray) and len(obj) >= THRESHOLD:
            position = self._into.store(obj)
            if position is not None:
                return (kind is bytes, position)
        return None


class _BuffersUnpickler(pickle.Unpickler):
    """Reads what :class:`_BuffersPickler` wrote: its persistent ids name stored blocks."""

    def __init__(self, data: memoryview, buffers: list[memoryview], stored: list[ShmBuffer]):
        super().__init__(io.BytesIO(data), buffers=buffers)
        self._stored = stored

    def persistent_load(self, pid: Any) -> Any:
        is_bytes, position = pid
        block = self._stored[position]
        return bytes(block) if is_bytes else bytearray(block)


_PROTO_AND_FRAME: Final = 2
_FRAME: Final = 0x95
_FRAME_LEN: Final = struct.Struct("<Q")


def _has_large_bytes(data: bytes) -> bool:
    """Whether a protocol-5 pickle holds data outside its frames: the pickler writes a
    ``bytes``, ``bytearray`` or ``str`` of 64 KiB or more there, after the frames (of 64
    KiB each) that hold everything else. A walk over the frames' headers: cheap."""
    at, end = _PROTO_AND_FRAME, len(data)
    while at < end:
        if data[at] != _FRAME:
            return True
        (length,) = _FRAME_LEN.unpack_from(data, at + 1)
        at += 1 + _FRAME_LEN.size + length
    return False


def _buffers_dumps(obj: object, into: OutOfBand) -> bytes:
    """:class:`_BuffersPickler`'s pickle of ``obj``, or ``_REFUSED``."""
    with io.BytesIO() as file:
        try:
            _BuffersPickler(file, into).dump(obj)
        except REFUSALS:
            return _REFUSED
        return file.getvalue()


def framed(data: bytes, into: OutOfBand) -> tuple[bytes, list[int]]:
    """The payload for a pickle ``data`` whose buffers ``into`` took (none: ``data``
    itself), and the blocks' offsets; ``into`` is left empty for the next message."""
    if not into.blocks and not into.stored:
        return data, []
    blocks, into.blocks = into.blocks, []
    stored, into.stored = into.stored, []
    parts = [MAGIC, _COUNT.pack(len(blocks))]
    parts.extend(_PAIR.pack(offset, length) for offset, length in blocks)
    parts.append(_COUNT.pack(len(stored)))
    parts.extend(_PAIR.pack(offset, length) for offset, length in stored)
    parts.append(data)
    return b"".join(parts), [offset for offset, _ in (*blocks, *stored)]


def unpack(payload: bytes, arena: Arena | None, *, own: bool) -> tuple[Any, list[ShmBuffer]]:
    """Rebuilds what :func:`pack` made; returns it and the buffers it was built over. With
    ``own``, this process takes the blocks over and they are freed when the objects built
    on them are gone; without, the sender keeps them (and must be told when to free).

    Raises:
        ValueError: the payload names blocks but there is no arena to find them in.
    """
    if not payload.startswith(MAGIC):
        return pickle.loads(payload), []
    if arena is None:
        raise ValueError("a message with shared-memory buffers arrived without an arena")
    at = len(MAGIC)
    lists: list[list[ShmBuffer]] = []
    for _ in range(2):  # the out-of-band buffers, then the stored bytes
        (count,) = _COUNT.unpack_from(payload, at)
        at += _COUNT.size
        views: list[ShmBuffer] = []
        for _ in range(count):
            offset, length = _PAIR.unpack_from(payload, at)
            at += _PAIR.size
            views.append(arena.view(offset, length, own))
        lists.append(views)
    buffers, stored = lists
    body = memoryview(payload)[at:]
    # Objects are rebuilt over memoryviews of the blocks, never over the blocks' own
    # objects: whatever keeps a buffer then keeps an export of its block, which is how
    # ShmBuffer.exports tells a block still in use (the views nobody kept are gone when
    # this returns).
    # (ShmBuffer has the buffer protocol; its stub cannot say so on Python 3.11.)
    handed = [memoryview(cast("Buffer", b)) for b in buffers]
    if stored:
        obj = _BuffersUnpickler(body, handed, stored).load()
    else:
        obj = pickle.loads(body, buffers=handed)
    return obj, [*buffers, *stored]
