"""Runs the portable part of the suite on every other CPython the machine has.

The extension is built once, for the stable ABI (abi3), so the same build serves every
CPython from 3.11 on: this copies the installed ``shoal`` package (``python/shoal`` of
an editable install) beside a virtual environment per version, installs the few test
tools those tests need there, and runs them with the copy on ``PYTHONPATH``. The
portable part leaves out what needs the heavy optional engines (Dask, Ray, joblib and
scikit-learn are installed for the main interpreter only) and CPython's own suites
(which run against one version each already), and, to keep CI short, the process
backend's and imap's own long files (their behaviour is the same Python code on every
version; test_pool.py runs the shared cases on it). A version the machine lacks is
skipped with a line that says so. Each version's run has a process group of its own;
what it leaves running is named, killed, and fails that version.

The interpreters are pyenv's or on ``PATH``, or Debian unstable's builds that
``make pythons`` (``tests/pythons.sh``) unpacks under ``target/`` (3.14 and 3.15 here).
Those leave out ensurepip's wheels, so every virtual environment is made without pip,
and pip is run from its wheel (fetched once by this interpreter's pip) to install itself
and the tools.

Usage::

    python tests/other_pythons.py 3.12 3.13 3.14 3.15
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from waiting import wait_for

import shoal

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "other-pythons"
UNPACKED = ROOT / "target" / "pythons"
TOOLS = ["pytest>=8", "pytest-timeout>=2.3", "psutil>=5.9", "hypothesis>=6.100", "numpy"]
TOOLS += ["rich>=13", "tqdm>=4.66", "cloudpickle>=3"]
TESTS = [
    "tests/test_pool.py",
    "tests/test_queue.py",
    "tests/test_worker_state.py",
    "tests/test_worker_exit.py",
    "tests/test_pool_stats.py",
    "tests/test_progress.py",
    "tests/test_docs.py",
    "tests/test_cpython_suite.py",
    "tests/test_process.py",
    "tests/test_preload.py",
    "tests/test_pool_lifecycle.py",
]
# Cases that need an engine only the main interpreter has, or the README's and docs'
# programs (which use them too).
LEAVE_OUT = (
    "not dask and not ray and not cluster and not joblib and not doc_examples and not readme"
)


def find(version: str) -> str | None:
    """A working CPython ``version`` interpreter on this machine (pyenv's, on PATH, or
    unpacked by ``make pythons``; a pyenv shim for a version not selected fails to run,
    so each is tried)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))[::-1]
    candidates.append(shutil.which(f"python{version}") or "")
    candidates.append(str(UNPACKED / version / "bin" / f"python{version}"))
    for python in filter(None, candidates):
        probe = subprocess.run([python, "-c", "import venv"], capture_output=True, check=False)
        if probe.returncode == 0:
            return python
    return None


def pip_wheel() -> Path:
    """pip's wheel, fetched once: run from it, pip installs itself into an environment
    that has none."""
    wheels = WORK / "wheels"
    found = sorted(wheels.glob("pip-*.whl"))
    if not found:
        download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        subprocess.run([*download, "--only-binary=:all:", "-d", str(wheels), "pip"], check=True)
        found = sorted(wheels.glob("pip-*.whl"))
    return found[-1]


def prepare(version: str, python: str) -> Path:
    """A virtual environment of ``python`` with the test tools; made once, reused while
    the tools listed are the ones it has."""
    venv = WORK / f"venv-{version}"
    interpreter = venv / "bin" / "python"
    # Written last, so an environment whose making was cut short is made again.
    made = venv / "tools.txt"
    if not made.exists() or made.read_text() != "\n".join(TOOLS):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
        pip = [str(interpreter), str(pip_wheel() / "pip"), "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "-q", "pip", *TOOLS], check=True)
        made.write_text("\n".join(TOOLS))
    return interpreter


def _group(pgid: int) -> dict[int, str]:
    """The live processes of process group ``pgid``, with their command lines."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members[int(entry.name)] = command.strip()
    return members


def run_suite(command: list[str], env: dict[str, str]) -> tuple[int, dict[int, str]]:
    """Runs ``command`` in a process group of its own and returns its exit status and what
    it left running, killed.

    A process the suite forks and then loses track of (a test that fails between fork and
    join) would outlive the run, hold the pipes of whatever reads this run's output, and
    keep a CI job waiting; the group finds every such one.
    """
    suite = subprocess.Popen(command, cwd=ROOT, env=env, process_group=0)
    try:
        code = suite.wait()
    except KeyboardInterrupt:  # the terminal's Ctrl-C reaches only its own group
        os.killpg(suite.pid, signal.SIGINT)
        suite.wait()
        raise
    finally:
        # What ends by itself (a resource tracker seeing its pipe close) is given a moment.
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not _group(suite.pid), "the suite's group to end", 5, interval=0.1)
        left = _group(suite.pid)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return code, left


def main(versions: list[str]) -> int:
    package = WORK / "package"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(
        Path(str(shoal.__file__)).parent,
        package / "shoal",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    failed = []
    for version in versions:
        python = find(version)
        if python is None:
            print(f"CPython {version}: not on this machine, skipped (3.14 and up: make pythons)")
            continue
        interpreter = prepare(version, python)
        started = time.monotonic()
        env = {**os.environ, "PYTHONPATH": str(package)}
        command = [str(interpreter), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        code, left = run_suite([*command, "-k", LEAVE_OUT, *TESTS], env)
        took = time.monotonic() - started
        print(f"CPython {version} ({python}): exit {code} in {took:.0f} s")
        for pid, line in left.items():
            print(f"CPython {version}: the run left process {pid} running (killed): {line}")
        if code != 0 or left:
            failed.append(version)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
