"""A second host for tests: a network namespace joined to this one by a veth pair, with
addresses the test makes itself, and programs run there in a PID namespace of their own
(so ``/proc`` shows them none of this host's processes, as on another machine).

Needs root and ``ip netns``; :func:`why_not` says why a machine cannot make one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Host:
    """The other host: its namespace and the address both ends use."""

    namespace: str
    address: str  # the other host's
    here: str  # this host's, as the other one reaches it

    def command(self, *argv: str) -> list[str]:
        """``argv`` as run on the other host."""
        return [
            "ip",
            "netns",
            "exec",
            self.namespace,
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",  # the program's whole PID namespace ends with this command
            *argv,
        ]


def why_not() -> str | None:
    """Why this machine cannot make a second host, or None if it can."""
    if os.geteuid() != 0:
        return "making a network namespace needs root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"no {tool!r} command on this machine"
    probe = f"shoal-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def second_host() -> Iterator[Host]:
    """A second host for the block's length; removed afterwards, whatever happened."""
    tag = uuid.uuid4().hex[:6]
    namespace, here_link, there_link = f"shoal-{tag}", f"sh{tag}a", f"sh{tag}b"
    octet = int(tag[:2], 16) % 200 + 20
    here, there = f"10.{octet}.77.1", f"10.{octet}.77.2"
    _run("ip", "netns", "add", namespace)
    try:
        _run("ip", "link", "add", here_link, "type", "veth", "peer", "name", there_link)
        _run("ip", "link", "set", there_link, "netns", namespace)
        _run("ip", "addr", "add", f"{here}/24", "dev", here_link)
        _run("ip", "link", "set", here_link, "up")
        inside = ("ip", "netns", "exec", namespace, "ip")
        _run(*inside, "addr", "add", f"{there}/24", "dev", there_link)
        _run(*inside, "link", "set", there_link, "up")
        _run(*inside, "link", "set", "lo", "up")
        yield Host(namespace, there, here)
    finally:
        subprocess.run(["ip", "link", "del", here_link], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
