"""The Pool's machinery: the feeder thread, the result thread, and shutdown.

One *job* (``shoal.pool._jobs``) per ``map``/``imap``/``apply``/``submit`` call. The feeder
thread cuts jobs into chunks and submits them to the backend, round-robin over the jobs
that may take more, while fewer than ``backend.max_in_flight`` chunks are outstanding. An
``imap`` job also stops reading its input while the consumer is ``READ_AHEAD`` (in
``_jobs``) chunks per worker behind, which is what keeps an infinite generator lazy. The
result thread takes the backend's results, frees their in-flight slots, feeds the chunk
sizer and delivers values to the job's result object (running user callbacks there, as
multiprocessing's result handler does).

The threads hold this core, never the ``Pool`` object, so an abandoned Pool can be
collected and its finalizer can shut the core down.
"""

from __future__ import annotations

import functools
import itertools
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from shoal.backends.base import (
    BackendFactory,
    CallKind,
    Chunk,
    ChunkResult,
    ResultSink,
    WorkerSpec,
)
from shoal.pool._chunks import ChunkSizer
from shoal.pool._jobs import SINGLE, Job, Target
from shoal.pool._stats import PoolStats, Tally

__all__ = ["CLOSE", "RUN", "TERMINATE", "PoolCore"]

RUN: Final = "RUN"
CLOSE: Final = "CLOSE"
TERMINATE: Final = "TERMINATE"


class PoolCore:
    """State shared by a Pool, its feeder thread and its result thread."""

    def __init__(
        self, factory: BackendFactory, spec: WorkerSpec, options: Mapping[str, Any]
    ) -> None:
        # One lock for the job list, the in-flight table and the state; the feeder waits
        # on it for room, work or shutdown. A plain lock: nothing takes it twice.
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.state = RUN
        self.jobs: deque[Job] = deque()
        # Per chunk handed to the backend: where its results go, its job's chunk sizer,
        # its first item's index and its number of items.
        self.in_flight: dict[int, tuple[Target, ChunkSizer, int, int]] = {}
        self.pulling: Job | None = None  # the job whose input the feeder is reading
        self.unbounded = False  # set by join(): finish every job without waiting for readers
        self._job_ids = itertools.count()
        self._chunk_ids = itertools.count()
        self._results: queue.SimpleQueue[ChunkResult | None] = queue.SimpleQueue()
        self._inline = False
        # What Pool.stats() counts: kept on the result path (see _handle).
        self._tally = Tally() if Tally.wanted() else None
        self._untallied = self._tally or Tally()  # (for stats() with the tally left out)
        self.backend = factory(spec, _sink_of(self), **options)
        # A backend that answers from one thread of its own gets results delivered right
        # there; otherwise (threads answering at once) they go through our result thread,
        # so that callbacks never run concurrently.
        self._inline = self.backend.single_result_thread
        self.max_in_flight = max(1, self.backend.max_in_flight)
        self.workers = max(1, self.backend.workers)
        self._feeder = threading.Thread(target=self._feed, name="shoal-pool-feeder", daemon=True)
        # Made only when needed: a thread never started would hold this core for good.
        self._receiver: threading.Thread | None = None
        if not self._inline:
            self._receiver = threading.Thread(
                target=self._receive, name="shoal-pool-results", daemon=True
            )
        self._feeder.start()
        if self._receiver is not None:
            self._receiver.start()

    def add(self, job: Job) -> None:
        """Queues ``job``; ``ValueError("Pool not running")`` after close or terminate.
        (Single calls take :meth:`add_single`.)"""
        with self.lock:
            if self.state != RUN:
                raise ValueError("Pool not running")
            job.job_id = next(self._job_ids)
            self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        """Puts ``job`` in line for the feeder; called with the lock held."""
        self.jobs.append(job)
        if len(self.in_flight) < self.max_in_flight:
            self.cond.notify_all()  # else the feeder could not take it anyway

    def add_single(
        self,
        fn: Callable[..., Any],
        call: CallKind,
        item: Any,
        target: Target,
        timeout: float | None,
        retries: int,
    ) -> None:
        """Queues one call (``apply``, ``submit``), as :meth:`add` would a job of one task,
        but without making a :class:`Job` when it can go to the backend at once: this is
        the path of tens of thousands of calls a second."""
        with self.lock:  # the condition's own lock, without its Python-level wrapper
            if self.state != RUN:
                raise ValueError("Pool not running")
            job_id = next(self._job_ids)
            if self.jobs or len(self.in_flight) >= self.max_in_flight:
                job = Job(fn, call, [item], SINGLE, target, None, timeout, retries)
                job.job_id = job_id
                self._enqueue(job)
                return
            chunk_id = next(self._chunk_ids)
            self.in_flight[chunk_id] = (target, SINGLE, 0, 1)
            target._handed_over(chunk_id)
            self.backend.submit(Chunk(job_id, chunk_id, fn, (item,), call, timeout, retries))
        target._set_length(1)

    def withdraw(self, chunk_id: int | None, cancel: Callable[[], bool]) -> bool:
        """Takes back a one-task job no worker has started, and calls ``cancel`` (which
        settles its result as cancelled) while no hand-over can race with it; returns
        what ``cancel`` returned, or false when the task may be running or is done.
        ``chunk_id`` is the chunk the job went out as, or None if it has not gone out."""
        with self.lock:
            if chunk_id is None:
                return cancel()  # still queued here: the hand-over skips a settled job
            taken_back = (
                self.state != TERMINATE
                and chunk_id in self.in_flight
                and self.backend.withdraw(chunk_id)
            )
            if taken_back:
                self.in_flight.pop(chunk_id, None)
                return cancel()
        return False

    def _submit_single(self, job: Job) -> None:
        """Hands a one-task job to the backend; called with the lock held."""
        assert job.items is not None
        chunk_id = next(self._chunk_ids)
        self.in_flight[chunk_id] = (job.target, job.sizer, 0, 1)
        job.target._handed_over(chunk_id)
        job.pulled = 1
        self.backend.submit(
            Chunk(job.job_id, chunk_id, job.fn, job.items, job.call, job.timeout, job.retries)
        )

    def stop_reading(self, job: Job, ahead: int = 0) -> None:
        """Reads no more of ``job``'s input than ``ahead`` items past what its consumer
        has taken (and nothing past what was read when that is less): what was handed
        out still runs, and its target learns that the input ends there
        (``Executor.shutdown`` with a lazy map left unread; ``ahead`` is its buffersize,
        the calls a standard executor would have submitted)."""
        with self.cond:
            end = job.consumed + ahead
            if end > job.pulled and job.target._wants_more():
                job.end = end  # the feeder reads up to it (pull), then stops
                job.window = job.limit = None
                self.cond.notify_all()
                return
            job.stopped = True
            if self.pulling is job:
                return  # the feeder ends it once the chunk it is reading is out
            if job not in self.jobs:
                return  # its input was read to the end already
            self.jobs.remove(job)
            pulled = job.pulled
        job.target._set_length(pulled)

    def read_all(self, job: Job) -> None:
        """Lifts ``job``'s read-ahead bound: the rest of its input is read and run whether
        or not anyone takes its results (``Executor.shutdown`` with a map left unread:
        ``concurrent.futures`` runs every call it was given)."""
        with self.cond:
            job.window = job.limit = None
            self.cond.notify_all()

    def consumed(self, job: Job, count: int = 1) -> None:
        """The consumer of ``job`` took ``count`` more items: its read-ahead may have room
        again."""
        with self.cond:
            was_full = not job.has_room(self.unbounded)
            job.consumed += count
            if was_full and job.has_room(self.unbounded):
                self.cond.notify_all()

    def _pick(self) -> Job | None:
        """The next job to cut a chunk from, round-robin; called with the lock held. The
        job leaves the list while the feeder reads its input and goes back to the end
        after, so that finished jobs never need to be searched for."""
        if len(self.in_flight) >= self.max_in_flight:
            return None
        for _ in range(len(self.jobs)):
            job = self.jobs.popleft()
            if not job.target._wants_more():
                continue  # failed, cancelled or finished: drop the rest of its input
            if job.has_room(self.unbounded):
                self.pulling = job
                return job
            self.jobs.append(job)
        return None

    def _feed(self) -> None:
        while True:
            with self.cond:
                while (job := self._pick()) is None:
                    if self.state == TERMINATE or (self.state == CLOSE and not self.jobs):
                        return
                    self.cond.wait()
            items, exhausted, error = job.pull()
            with self.cond:
                self.pulling = None
                if self.state == TERMINATE:
                    return
                start = job.pulled
                job.pulled += len(items)
                if items:
                    chunk_id = next(self._chunk_ids)
                    self.in_flight[chunk_id] = (job.target, job.sizer, start, len(items))
                    chunk = Chunk(
                        job.job_id, chunk_id, job.fn, items, job.call, job.timeout, job.retries
                    )
                    if job.progress is not None:
                        chunk.on_progress = functools.partial(job.progress.partly, start)
                    self.backend.submit(chunk)
                    del chunk
                stopped = job.stopped and not exhausted
                if not exhausted and not stopped:
                    self.jobs.append(job)
            if error is not None:
                job.target._set_source_error(job.pulled, error)
            elif exhausted or stopped:
                job.target._set_length(job.pulled)
            # Holds nothing while it waits for the next job: the last one's function,
            # arguments and error would otherwise outlive the caller's use of them.
            del job, items, error

    def _sink(self, result: ChunkResult) -> None:
        if self._inline:
            self._handle(result)
        else:
            self._results.put(result)

    def _receive(self) -> None:
        while (result := self._results.get()) is not None:
            self._handle(result)
            del result  # holds no chunk's results while it waits for the next

    def _handle(self, result: ChunkResult) -> None:
        # No lock on the way of a result (the lock would be taken tens of thousands of
        # times a second, against a caller submitting): a dict pop is atomic, and the
        # room it frees matters only when jobs wait or the state changed. A job queued
        # concurrently is safe either way: add_single checks for room after queueing it.
        entry = self.in_flight.pop(result.chunk_id, None)
        if entry is None:
            return  # answered after terminate(): nobody is waiting for it
        if self.jobs or self.state != RUN:
            with self.lock:
                started = self._use_room()
            for job in started:
                job.target._set_length(1)
        target, sizer, start, count = entry
        elapsed = result.elapsed
        sizer.observe(count, elapsed)
        if (tally := self._tally) is not None:
            # Counted inline: a method call alone would cost a third more, on a path
            # taken tens of thousands of times a second (benches/stats_bench.py).
            counts = tally.by_worker.get(result.worker)
            if counts is None:
                counts = tally.by_worker[result.worker] = [0, 0, 0.0]
            counts[0] += count
            counts[1] += 1
            counts[2] += elapsed
            if result.failures:
                tally.failed += len(result.failures)
            tally.sizer = sizer
            if elapsed > tally.floor:
                tally.note_slow(result, count)
        target._deliver(start, result.values, result.failures)

    def _use_room(self) -> list[Job]:
        """After a chunk was answered, with the lock held: one-task jobs waiting at the
        head of the queue take the freed room from this thread (waking the feeder for
        each of them would cost more than the job), and the feeder is woken if it has
        work that may now go, or join() is waiting. Returns the jobs handed over."""
        started: list[Job] = []
        jobs = self.jobs
        while jobs and jobs[0].single and self.state != TERMINATE:
            if len(self.in_flight) >= self.max_in_flight:
                break
            job = jobs.popleft()
            if job.target._wants_more():
                self._submit_single(job)
                started.append(job)
        if self.state != RUN or (jobs and len(self.in_flight) < self.max_in_flight):
            self.cond.notify_all()
        return started

    def unfinished(self) -> dict[int, Any]:
        """The result objects of the calls not answered yet, by ``id`` (``Pool._cache``)."""
        with self.lock:
            pulling = [] if self.pulling is None else [self.pulling.target]
            # list(): results leave in_flight without the lock (see _handle).
            targets = [
                *(job.target for job in self.jobs),
                *pulling,
                *(entry[0] for entry in list(self.in_flight.values())),
            ]
        found: dict[int, Any] = {}
        for target in targets:
            held = target._result()
            if held is not None and target._wants_more():
                found[id(held)] = held
        return found

    def stats(self, backend: str) -> PoolStats:
        """The pool's counts joined with the backend's report (``Pool.stats``)."""
        return self._untallied.report(backend, self.backend.stats(), len(self.in_flight))

    def close(self) -> None:
        with self.cond:
            if self.state == RUN:
                self.state = CLOSE
            self.cond.notify_all()

    def join(self) -> None:
        """After close: waits for every job to be handed out and answered, then for the
        workers and both threads to exit. After terminate: waits for the exits."""
        with self.cond:
            self.unbounded = True
            self.cond.notify_all()
        _join(self._feeder)
        self.backend.shutdown(cancel=self.state == TERMINATE)
        self.backend.join()
        self._results.put(None)
        _join(self._receiver)

    def terminate(self, wait: bool) -> None:
        """Cancels every pending result, drops queued chunks and stops the workers; with
        ``wait``, also waits for them to be gone, if the backend can stop running tasks (a
        thread running a task that never ends cannot be waited for)."""
        with self.cond:
            already = self.state == TERMINATE
            self.state = TERMINATE
            jobs = [*self.jobs, *([self.pulling] if self.pulling is not None else [])]
            targets = {id(job.target): job.target for job in jobs}
            # list(): results leave in_flight without the lock (see _handle).
            for target, _, _, _ in list(self.in_flight.values()):
                targets[id(target)] = target
            self.jobs.clear()
            self.in_flight.clear()
            self.cond.notify_all()
        if not already:
            self.backend.shutdown(cancel=True)
            self._results.put(None)
        for target in targets.values():
            target._cancel()
        if wait:
            _join(self._feeder)
            if self.backend.stops_running_tasks:
                self.backend.join()
            _join(self._receiver)


def _sink_of(core: PoolCore) -> ResultSink:
    """The backend's way back to ``core``, which does not keep the core alive: the core
    holds its backend, and a backend holding its core would make them a cycle that only
    the garbage collector frees, keeping the workers' shared memory and its descriptors
    until it runs. Once the core is gone, nobody is waiting for a result."""
    core_ref = weakref.ref(core)

    def sink(result: ChunkResult) -> None:
        alive = core_ref()
        if alive is not None:
            alive._sink(result)

    return sink


def _join(thread: threading.Thread | None) -> None:
    # A callback running on the result thread may close or terminate its own pool.
    if thread is not None and thread is not threading.current_thread() and thread.ident is not None:
        thread.join()
