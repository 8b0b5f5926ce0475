"""Functions that tests run in child processes (importable under spawn and forkserver)."""

from __future__ import annotations

from typing import Any

import shoal

_initialised: Any = None


def produce(q: shoal.Queue[tuple[int, int]], producer: int, count: int) -> None:
    """Puts (producer, i) for i in range(count), in batches and one by one."""
    i = 0
    while i < count:
        if i % 2000 < 1000:
            q.put((producer, i))
            i += 1
        else:
            n = min(100, count - i)
            q.put_many([(producer, j) for j in range(i, i + n)])
            i += n


def consume(q: shoal.Queue[Any], out: shoal.Queue[Any]) -> None:
    """Gets until a None sentinel and sends back everything it got as one list."""
    seen: list[Any] = []
    while True:
        batch = q.get_many(500)
        for i, item in enumerate(batch):
            if item is None:
                # Sentinels for the other consumers may have come in the same batch.
                if rest := batch[i + 1 :]:
                    q.put_many(rest)
                out.put(seen)
                return
            seen.append(item)


def echo(inbox: shoal.Queue[Any], outbox: shoal.Queue[Any]) -> None:
    """Returns one message, doubled."""
    outbox.put(inbox.get(timeout=60) * 2)


def block_in_get(q: shoal.Queue[Any], ready: shoal.Queue[Any]) -> None:
    """Signals it is about to block, then blocks in get forever."""
    ready.put("ready")
    q.get()


def pool_init(q: shoal.Queue[Any]) -> None:
    """A Pool initializer that keeps the queue it was given."""
    global _initialised
    _initialised = q


def pool_task(x: int) -> int:
    """Puts x squared on the queue the initializer kept."""
    assert _initialised is not None
    _initialised.put(x * x)
    return x


def array_facts(inbox: shoal.Queue[Any], outbox: shoal.Queue[Any]) -> None:
    """Gets arrays and answers what it sees of each: sum, writeable, owns its data."""
    while (a := inbox.get(timeout=30)) is not None:
        outbox.put((float(a.sum()), bool(a.flags.writeable), bool(a.flags.owndata)))


def array_maker(outbox: shoal.Queue[Any], n: int, count: int) -> None:
    """Puts ``count`` fresh arrays of ``n`` float64 items, then exits at once."""
    import numpy as np

    for i in range(count):
        outbox.put(np.full(n, float(i)))
