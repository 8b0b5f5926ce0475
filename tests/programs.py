"""Programs the tests start, and what they leave behind.

Each program runs in a session of its own, as a terminal's job does, with ``SIGINT`` at its
default whatever this process inherited (a suite run as a background job inherits it
ignored, and a Python started so never turns Ctrl-C into ``KeyboardInterrupt``). When the
test is done with it, pass or fail, everything still alive in its session is killed: its
zygote, its workers, anything they started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

from waiting import wait_for

# The test's budget for a program unless it says otherwise: a hang fails, it never blocks
# the suite.
TIMEOUT = 120.0


def _as_a_job() -> None:
    """Runs in the child between fork and exec (no other thread exists there)."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def started(argv: Sequence[str], **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """The program ``argv``, running as a job of its own (text streams); on leaving, it
    and everything of its session are killed and reaped."""
    proc = subprocess.Popen(list(argv), preexec_fn=_as_a_job, text=True, **popen)
    try:
        yield proc
    finally:
        kill_session(proc.pid)
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def run(
    argv: Sequence[str],
    *,
    timeout: float = TIMEOUT,
    check: bool = False,
    input: str | None = None,
    **popen: Any,
) -> subprocess.CompletedProcess[str]:
    """Runs ``argv`` to its end as a job of its own, capturing both streams (and given
    ``input``), then kills whatever of its session is left. Fails the test, with both
    streams, if it runs past ``timeout`` seconds, or (with ``check``) if it exits with an
    error."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    if input is not None:
        popen.setdefault("stdin", subprocess.PIPE)
    with started(argv, **popen) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(proc.pid)
            out, err = proc.communicate()
            raise AssertionError(
                f"{' '.join(argv)} did not end within {timeout} s\n{out}\n{err}"
            ) from None
    done = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check:
        assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{err}"
    return done


def live_processes() -> dict[int, tuple[int, int]]:
    """Every live process (zombies are not): its pid -> its parent's pid, its session."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        # After "pid (comm) ": state, ppid, pgrp, session (comm may hold spaces).
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X"):
            found[int(name)] = (int(fields[1]), int(fields[3]))
    return found


def in_session(sid: int) -> list[int]:
    """The live processes of session ``sid``."""
    return [pid for pid, (_, session) in live_processes().items() if session == sid]


def kill_session(sid: int) -> None:
    """Kills every process of session ``sid``."""
    for pid in in_session(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def left_in_session(sid: int, within: float = 5.0) -> list[int]:
    """The processes of session ``sid`` still alive ``within`` seconds from now (at
    once, when none are): what a program that has ended left behind."""
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not in_session(sid), f"session {sid} to end", within, interval=0.02)
    return in_session(sid)
