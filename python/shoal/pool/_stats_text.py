"""``print(pool.stats())``: a :class:`~shoal.pool._stats.PoolStats` as a short table.

Example:
    >>> from shoal.pool._stats import PoolStats, SlowTask, WorkerStats
    >>> worker = WorkerStats(0, 4242, True, 90, 9, 1.5, 0.5, 0.02, {"maxtasksperchild": 2})
    >>> stats = PoolStats(
    ...     "process", 2.0, 90, 1, 9, 45.0, 10, 0, (SlowTask(0.4, 1, "7", 0),), (worker,), None
    ... )
    >>> print(stats)
    process pool: 90 tasks (1 failed), 9 chunks in 2.0 s: 45.0 tasks/s; chunk 10, 0 in flight
    worker  pid    tasks  chunks  busy    idle    start-up  restarts
         0  4242      90       9  1.50 s  0.50 s  20 ms     2 maxtasksperchild
    slowest: 400 ms (1 task: 7, worker 0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.pool._stats import PoolStats, WorkerStats

__all__ = ["describe"]


def describe(stats: PoolStats) -> str:
    """The lines ``print(stats)`` shows."""
    failed = f" ({stats.tasks_failed:,} failed)" if stats.tasks_failed else ""
    chunk = "" if stats.chunk_size is None else f"; chunk {stats.chunk_size:,}"
    lines = [
        f"{stats.backend} pool: {stats.tasks_done:,} tasks{failed}, {stats.chunks_done:,}"
        f" chunks in {stats.uptime:.1f} s: {stats.tasks_per_second:,.1f} tasks/s{chunk},"
        f" {stats.in_flight:,} in flight"
    ]
    if stats.workers:
        lines.append("worker  pid    tasks  chunks  busy    idle    start-up  restarts")
        lines.extend(_worker_line(w) for w in stats.workers)
    for rank, slow in enumerate(stats.slowest[:3]):
        what = f"{slow.tasks:,} task" + ("s" if slow.tasks != 1 else "")
        if slow.arguments is not None:
            what += f": {slow.arguments}" if slow.tasks == 1 else f", the first: {slow.arguments}"
        head = "slowest:" if rank == 0 else "        "
        lines.append(f"{head} {_seconds(slow.seconds)} ({what}, worker {slow.worker})")
    if stats.arena is not None:
        arena = stats.arena
        lines.append(
            f"arena: {arena['in_use']:,} of {arena['capacity']:,} bytes in use"
            f" (peak {arena['peak']:,}), {arena['refused']:,} refused"
        )
    return "\n".join(lines)


def _worker_line(w: WorkerStats) -> str:
    index = "-" if w.index is None else str(w.index)
    pid = "-" if w.pid is None else str(w.pid)
    idle = "-" if w.idle is None else f"{w.idle:.2f} s"
    startup = "-" if w.startup is None else _seconds(w.startup)
    restarts = ", ".join(f"{n} {why}" for why, n in sorted(w.restarts.items())) or "0"
    if not w.alive:
        restarts += " (ended)"
    return (
        f"{index:>6}  {pid:<5}  {w.tasks:>5,}  {w.chunks:>6,}  {w.busy:.2f} s  {idle:<6}"
        f"  {startup:<8}  {restarts}"
    )


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
