"""A memory cgroup made for a test and removed after it (cgroup v2 or v1), for runs that
need the kernel's OOM killer to act on a worker, not on the machine."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

_CGROUP_V1 = Path("/sys/fs/cgroup/memory")
_CGROUP_V2 = Path("/sys/fs/cgroup")


class Admit:
    """Moves a process into a cgroup: ``admit(pid)``; a process joins it by itself by
    writing its own pid to ``procs``."""

    def __init__(self, procs: Path) -> None:
        self.procs = procs

    def __call__(self, pid: int) -> None:
        self.procs.write_text(str(pid))


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Admit]:
    """A memory cgroup of ``limit`` bytes (no swap); yields what moves a process into
    it. On leaving, its processes are killed and it is removed.

    Raises:
        OSError: the machine does not let this process make one (not root, no memory
            controller).
    """
    v2 = (_CGROUP_V2 / "cgroup.controllers").exists()
    parent = _CGROUP_V2 if v2 else _CGROUP_V1
    group = parent / f"shoal-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(limit))
        if v2:
            (group / "memory.swap.max").write_text("0")
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise

    try:
        yield Admit(group / "cgroup.procs")
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        for _ in range(100):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.05)  # (its last process is still on its way out)
