"""What a pool and its worker processes send each other, named: a chunk's items on their
way to a worker (:class:`ChunkPayload`), the worker's answer (:class:`ChunkOutcome`),
and what it says as it leaves (:class:`Farewell`).

They cross as plain tuples of their fields: pickled as records, they would cost a global
look-up and a Python constructor per message (some microseconds more per chunk to write
and to read, where a chunk of tiny tasks takes a few in all). So the writer of a chunk
or an outcome calls :func:`payload_fields` or :func:`outcome_fields` with the fields by
name (building the record and copying it into a tuple cost ten times more); the reader
names it again with ``Record._make``. The fields' order is stated here only.

Example:
    >>> sent = outcome_fields(values=[4], failures={}, elapsed=0.5, kept=[], label=None)
    >>> ChunkOutcome._make(sent).values
    [4]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from shoal._wire.failure import Failure
from shoal._wire.pickling import loads

__all__ = [
    "ChunkOutcome",
    "ChunkPayload",
    "Farewell",
    "outcome_fields",
    "payload_fields",
    "read_farewell",
]


class ChunkPayload(NamedTuple):
    """A chunk on its way to a worker (its function travels apart, once per worker)."""

    call: int
    """How its function is called: a ``CallKind.code``, plus ``WATCHED`` when a progress
    bar watches it."""
    items: Sequence[Any]
    """The tasks' arguments, one entry per call."""


class ChunkOutcome(NamedTuple):
    """A worker's answer for a chunk."""

    values: list[Any]
    """One entry per task, ``None`` where it failed; ``[None]`` when the worker could not
    read the chunk at all (``failures[0]`` then says why)."""
    failures: dict[int, Failure]
    """The tasks that raised, by their index in the chunk."""
    elapsed: float
    """Seconds the worker spent on it."""
    kept: list[int]
    """The arena blocks of its arguments the worker took over (it frees them itself)."""
    label: str | None
    """A description of its first task's arguments, for a slow chunk; else ``None``."""


def payload_fields(call: int, items: Sequence[Any]) -> tuple[int, Sequence[Any]]:
    """A :class:`ChunkPayload` as it crosses: its fields, in order, in a plain tuple."""
    return (call, items)


def outcome_fields(
    values: list[Any],
    failures: dict[int, Failure],
    elapsed: float,
    kept: list[int],
    label: str | None,
) -> tuple[list[Any], dict[int, Failure], float, list[int], str | None]:
    """A :class:`ChunkOutcome` as it crosses: its fields, in order, in a plain tuple."""
    return (values, failures, elapsed, kept, label)


class Farewell(NamedTuple):
    """What the pool's ``worker_exit`` gave in a worker, as it left."""

    value: Any
    """What it returned (``None`` if it raised)."""
    failure: Failure | None
    """What it raised, else ``None``."""


def read_farewell(payload: bytes) -> Farewell:
    """A worker's :class:`Farewell` as the pool reads it; one that cannot be read is
    reported as the hook's failure."""
    try:
        return Farewell._make(cast("tuple[Any, Any]", loads(payload)))
    except Exception as exc:
        return Farewell(None, Failure.capture(exc))
