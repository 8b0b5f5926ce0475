"""shoal.Queue under process deaths, from Python: a process killed while blocked in put or
get, or in the middle of either, never wedges the others; messages are never corrupted or
duplicated, and a death loses at most the message it was moving."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from collections import Counter
from typing import Any

import shoal

_CTX = mp.get_context("fork")


def _produce_forever(q: shoal.Queue[Any], producer: int, body: int) -> None:
    n = 0
    while True:
        # Some messages larger than the ring, so a death can fall in the middle of one.
        payload = b"x" * (body if n % 7 == 0 else 16)
        q.put((producer, n, len(payload), payload))
        n += 1


def _consume_forever(q: shoal.Queue[Any], out: shoal.Queue[Any]) -> None:
    me = os.getpid()  # (order is checked per consumer: consumers race each other)
    while True:
        producer, n, size, payload = q.get()
        if len(payload) != size or payload != payload[:1] * size:
            out.put((-1, n, me))  # damaged: reported, never silently dropped
        else:
            out.put((producer, n, me))


def _block_in_put(q: shoal.Queue[Any], ready: shoal.Queue[str]) -> None:
    ready.put("ready")
    q.put(b"y" * 100)  # the ring is full: waits here until killed


def test_a_producer_killed_while_blocked_in_put_does_not_wedge_the_rest() -> None:
    q: shoal.Queue[Any] = shoal.Queue(capacity=4096)
    ready: shoal.Queue[str] = shoal.Queue()
    while True:
        try:
            q.put_nowait(b"z" * 64)
        except shoal.Full:
            break
    child = _CTX.Process(target=_block_in_put, args=(q, ready))
    child.start()
    assert ready.get(timeout=30) == "ready"
    time.sleep(0.1)
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join(10)
    started = time.perf_counter()
    assert q.get(timeout=5) == b"z" * 64  # consumers go on
    q.put(b"after", timeout=5)  # and so do producers, once there is room
    print(f"\nget and put after the kill took {(time.perf_counter() - started) * 1000:.1f} ms")


def test_random_kills_of_python_producers_and_consumers() -> None:
    q: shoal.Queue[Any] = shoal.Queue(capacity=64 * 1024)
    out: shoal.Queue[Any] = shoal.Queue()
    body = 100 * 1024  # larger than the ring: travels in pieces
    rng = random.Random(7)
    producers = {p: _CTX.Process(target=_produce_forever, args=(q, p, body)) for p in range(2)}
    consumers = [_CTX.Process(target=_consume_forever, args=(q, out)) for _ in range(2)]
    for proc in [*producers.values(), *consumers]:
        proc.start()
    kills = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.005, 0.05))
        if rng.random() < 0.5:
            p = rng.choice(list(producers))
            victim = producers[p]
            os.kill(victim.pid or 0, signal.SIGKILL)
            victim.join(10)
            # A new producer takes the old one's place under a new number.
            new = max(producers) + 1
            del producers[p]
            producers[new] = _CTX.Process(target=_produce_forever, args=(q, new, body))
            producers[new].start()
        else:
            i = rng.randrange(len(consumers))
            os.kill(consumers[i].pid or 0, signal.SIGKILL)
            consumers[i].join(10)
            consumers[i] = _CTX.Process(target=_consume_forever, args=(q, out))
            consumers[i].start()
        kills += 1
    for proc in [*producers.values(), *consumers]:
        os.kill(proc.pid or 0, signal.SIGKILL)
        proc.join(10)
    received: list[tuple[int, int, int]] = []
    while True:
        try:
            received.extend(out.get_many(10_000, timeout=0.5))
        except shoal.Empty:
            break
    got = [(producer, n) for producer, n, _ in received]
    counts = Counter(got)
    duplicated = [key for key, times in counts.items() if times > 1]
    print(f"\n{kills} kills, {len(got)} messages delivered, {len(duplicated)} duplicated")
    assert kills > 20
    assert len(got) > 100, "the queue wedged"
    assert not duplicated
    assert not [key for key in counts if key[0] == -1], "a damaged message was delivered"
    # Each consumer gets each producer's messages in order, with gaps only where a death
    # fell (a message a consumer died holding, or one a producer died before putting).
    by_pair: dict[tuple[int, int], list[int]] = {}
    for producer, n, consumer in received:
        by_pair.setdefault((consumer, producer), []).append(n)
    for (consumer, producer), numbers in by_pair.items():
        assert numbers == sorted(numbers), f"producer {producer} out of order at {consumer}"
        assert len(set(numbers)) == len(numbers)
