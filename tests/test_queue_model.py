"""shoal.Queue against collections.deque as a model, in one process (hypothesis)."""

from __future__ import annotations

import queue
from collections import deque
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import shoal

messages = st.one_of(
    st.integers(),
    st.binary(max_size=3000),
    st.text(max_size=50),
    st.lists(st.integers(), max_size=20),
)


class QueueMatchesDeque(RuleBasedStateMachine):
    """Random puts and gets on a small bounded queue behave like a bounded deque."""

    def __init__(self) -> None:
        super().__init__()
        self.maxsize = 5
        self.q: shoal.Queue[Any] = shoal.Queue(self.maxsize, capacity=16384)
        self.model: deque[Any] = deque()

    @rule(item=messages)
    def put_nowait(self, item: Any) -> None:
        if len(self.model) >= self.maxsize:
            try:
                self.q.put_nowait(item)
            except queue.Full:
                return
            raise AssertionError("put_nowait succeeded on a full queue")
        self.q.put_nowait(item)
        self.model.append(item)

    @rule(items=st.lists(messages, max_size=4))
    def put_many_nowait(self, items: list[Any]) -> None:
        if len(self.model) + len(items) > self.maxsize:
            try:
                self.q.put_many(items, block=False)
            except queue.Full:
                return
            raise AssertionError("put_many succeeded beyond maxsize")
        self.q.put_many(items, block=False)
        self.model.extend(items)

    @rule()
    def get_nowait(self) -> None:
        if not self.model:
            try:
                self.q.get_nowait()
            except queue.Empty:
                return
            raise AssertionError("get_nowait succeeded on an empty queue")
        assert self.q.get_nowait() == self.model.popleft()

    @rule(n=st.integers(min_value=1, max_value=4))
    def get_many_nowait(self, n: int) -> None:
        if not self.model:
            try:
                self.q.get_many(n, block=False)
            except queue.Empty:
                return
            raise AssertionError("get_many succeeded on an empty queue")
        expected = [self.model.popleft() for _ in range(min(n, len(self.model)))]
        assert self.q.get_many(n, block=False) == expected

    @invariant()
    def sizes_agree(self) -> None:
        assert self.q.qsize() == len(self.model)
        assert self.q.empty() == (not self.model)
        assert self.q.full() == (len(self.model) >= self.maxsize)

    def teardown(self) -> None:
        self.q.close()


QueueMatchesDeque.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueMatchesDeque = QueueMatchesDeque.TestCase
