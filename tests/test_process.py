"""shoal.Process and shoal.Manager as programs use them: scripts run as ``__main__`` with
no guard, under no start method and under fork, spawn and forkserver; where a program
also runs on multiprocessing (with the guard it needs there), both print the same."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import programs
import pytest
from waiting import wait_for

from scripts import run_script

METHODS = [None, "fork", "spawn", "forkserver"]

_PREAMBLE = """
import sys
import {mp} as multiprocessing
import {mp}.managers
METHOD = {method!r}
"""
# (A block of its own: under multiprocessing it goes under the guard with the rest.)
_SET_METHOD = """
if METHOD:
    multiprocessing.set_start_method(METHOD)
"""

# Issue-shaped programs: the five that 3.14's forkserver default broke.
PROGRAMS = {
    "queue": """
def worker(q, n):
    q.put(n * n)

# main
q = multiprocessing.Queue()
ps = [multiprocessing.Process(target=worker, args=(q, i)) for i in range(3)]
for p in ps:
    p.start()
print(sorted(q.get(timeout=30) for _ in ps))
for p in ps:
    p.join()
print([p.exitcode for p in ps], [p.name for p in ps])
""",
    "local_and_lambda": """
def main():
    scale = 3
    def local(q):
        q.put(("local", scale))
    q = multiprocessing.Queue()
    for target in (local, lambda q: q.put(("lambda", multiprocessing.current_process().name))):
        p = multiprocessing.Process(target=target, args=(q,))
        p.start()
        print(q.get(timeout=30))
        p.join()
# main
main()
""",
    "subclass": """
class Worker(multiprocessing.Process):
    def __init__(self, q):
        super().__init__()
        self.q = q
    def run(self):
        parent = multiprocessing.parent_process()
        self.q.put(f"{type(self).__name__} {self.name} {parent.name} {parent.is_alive()}")

# main
q = multiprocessing.Queue()
w = Worker(q)
w.start()
print(q.get(timeout=30))
w.join()
print(w.exitcode)
""",
    "manager": """
def record(shared, x):
    shared[x] = x * 10
    return x * x

# main
with multiprocessing.Manager() as manager:
    shared = manager.dict()
    with multiprocessing.Pool(2) as pool:
        print(pool.starmap(record, [(shared, i) for i in range(4)]))
    print(sorted(shared.items()))
""",
    "registered_manager": """
BaseManager = multiprocessing.managers.BaseManager

class Maths:
    def add(self, a, b):
        return a + b

class MathsManager(BaseManager):
    pass

MathsManager.register("Maths", Maths)

def use(maths, q):
    q.put(maths.add(2, 3))

# main
with MathsManager() as manager:
    maths = manager.Maths()
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=use, args=(maths, q))
    p.start()
    print(q.get(timeout=30))
    p.join()
    print(maths.add(1, 1))
""",
    "value_and_lock": """
def add(v, lock, n):
    for _ in range(n):
        with lock:
            v.value += 1

# main
v, lock = multiprocessing.Value("i", 0), multiprocessing.Lock()
ps = [multiprocessing.Process(target=add, args=(v, lock, 500)) for _ in range(3)]
for p in ps:
    p.start()
for p in ps:
    p.join()
print(v.value)
""",
}


def _shoal(method: str | None) -> str:
    """The top of a program on shoal that sets ``method`` (``None``: none)."""
    return _PREAMBLE.format(mp="shoal", method=method) + _SET_METHOD


def _guarded(body: str) -> str:
    """The program as multiprocessing needs it: what follows ``# main`` under the guard
    (what precedes it, definitions and registrations, stays at the top, where a spawned
    child, which runs the script again, finds them)."""
    top, main = body.split("# main\n", 1)
    indented = "".join(f"    {line}\n" for line in main.splitlines())
    return f'{top}if __name__ == "__main__":\n{indented}'


# What each prints (the same on multiprocessing, where it can run the program at all).
PRINTS = {
    "queue": "[0, 1, 4]\n[0, 0, 0] ['Process-1', 'Process-2', 'Process-3']\n",
    "local_and_lambda": "('local', 3)\n('lambda', 'Process-2')\n",
    "subclass": "Worker Worker-1 MainProcess True\n0\n",
    "manager": "[0, 1, 4, 9]\n[(0, 0), (1, 10), (2, 20), (3, 30)]\n",
    "value_and_lock": "1500\n",
    "registered_manager": "5\n2\n",
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_an_unguarded_program_runs_as_multiprocessing_runs_it_guarded(
    tmp_path: Path, program: str, method: str | None
) -> None:
    body = PROGRAMS[program]
    ours = run_script(_shoal(method) + body, tmp_path, "")
    assert ours.stdout == PRINTS[program]
    forks = (method or multiprocessing.get_all_start_methods()[0]) == "fork"
    if program == "local_and_lambda" and not forks:
        return  # multiprocessing cannot send a local function or a lambda to spawn one
    guarded = _PREAMBLE.format(mp="multiprocessing", method=method) + _guarded(
        body.replace("# main\n", "# main\n" + _SET_METHOD.lstrip("\n"), 1)
    )
    assert run_script(guarded, tmp_path, "").stdout == ours.stdout


_API = """
import os, signal, time

def sleeper(seconds):
    time.sleep(seconds)

def exit_with(code):
    sys.exit(code)

def until_interrupted(q):
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        q.put("interrupted")

p = multiprocessing.Process(target=sleeper, args=(30,), name="napper", daemon=True)
assert p.pid is None and p.exitcode is None and not p.is_alive()
p.start()
assert p.is_alive() and p.pid > 0 and p.name == "napper" and p.daemon
assert p in multiprocessing.active_children()
p.join(0.2)
assert p.exitcode is None
from multiprocessing.connection import wait
assert wait([p.sentinel], 0.1) == []
p.terminate()
p.join(30)
print("terminated", p.exitcode)
assert not p.is_alive() and p not in multiprocessing.active_children()
p.close()
try:
    p.is_alive()
except ValueError as exc:
    print("closed:", exc)

k = multiprocessing.Process(target=sleeper, args=(30,))
k.start(); k.kill(); k.join(30)
print("killed", k.exitcode)

e = multiprocessing.Process(target=exit_with, args=(3,))
e.start(); e.join(30)
print("exit code", e.exitcode)

q = multiprocessing.Queue()
i = multiprocessing.Process(target=until_interrupted, args=(q,))
i.start()
time.sleep(0.5)  # (its handler is in place by then)
i.interrupt()
print(q.get(timeout=30)); i.join(30)
print("after interrupt", i.exitcode)
print("authkey", bytes(i.authkey) == bytes(multiprocessing.current_process().authkey))
"""


@pytest.mark.parametrize("method", [None, "spawn", "forkserver"])
def test_the_process_api(tmp_path: Path, method: str | None) -> None:
    # (interrupt() is Python 3.14's; shoal's Process has it on every Python.)
    source = _shoal(method) + _API
    out = run_script(source, tmp_path, "").stdout.splitlines()
    assert out[:5] == [
        "terminated -15",
        "closed: process object is closed",
        "killed -9",
        "exit code 3",
        "interrupted",
    ], out
    assert out[5:] == ["after interrupt 0", "authkey True"]


_UNSENDABLE = """
import threading

def uses(lock):
    pass

try:
    multiprocessing.Process(target=uses, args=(threading.Lock(),)).start()
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_target_that_cannot_be_sent_fails_at_start_naming_the_part(
    tmp_path: Path, method: str
) -> None:
    out = run_script(_shoal(method) + _UNSENDABLE, tmp_path, "")
    assert out.stdout.startswith("PicklingError cannot send obj._args[0] (_thread.lock)")


_ORPHAN = """
import os, time

def forever():
    time.sleep(120)

p = multiprocessing.Process(target=forever)
p.start()
print(p.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("method", METHODS)
def test_a_killed_program_leaves_no_child(tmp_path: Path, method: str | None) -> None:
    script = tmp_path / "program.py"
    script.write_text(_shoal(method) + _ORPHAN)
    # A job of its own: whatever the test started goes with its session, pass or fail.
    argv = [sys.executable, str(script)]
    with programs.started(argv, stdout=subprocess.PIPE) as program:
        assert program.stdout is not None
        child = int(program.stdout.readline())
        program.kill()
        program.wait(30)
        wait_for(lambda: not _running(child), "the orphaned child to exit", 10, interval=0.05)


_ZYGOTE_DIES_AT_FORK = """
import os, socket, sys, time
from shoal._process import zygote_server

zygote = os.getpid()
fork = os.fork

def fork_as_the_zygote_dies():
    pid = fork()
    if pid:
        os._exit(0)  # the zygote is killed just after the fork
    while os.getppid() == zygote:  # the child goes on once it has been orphaned
        time.sleep(0.01)
    with open(sys.argv[1], "w") as out:
        out.write(str(os.getpid()))
    return 0

os.fork = fork_as_the_zygote_dies
here, there = socket.socketpair()
zygote_server._fork_child(here, [], lambda: time.sleep(120))
"""


def test_a_child_whose_zygote_dies_as_it_forks_exits(tmp_path: Path) -> None:
    # The window between the zygote's fork and its child's asking to die with it: a child
    # that learned its parent's pid only then would take its new parent for the zygote.
    script, told = tmp_path / "zygote.py", tmp_path / "child-pid"
    script.write_text(_ZYGOTE_DIES_AT_FORK)
    with programs.started([sys.executable, str(script), str(told)]) as zygote:
        zygote.wait(30)
        wait_for(lambda: told.exists() and told.read_text(), "the child's pid")
        child = int(told.read_text())
        wait_for(lambda: not _running(child), "the orphaned child to exit", 10)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


_AT_EXIT = """
import time

def late():
    time.sleep(0.5)
    with open("late.txt", "w") as out:
        out.write("ran to its end")

def forever():
    time.sleep(120)

multiprocessing.Process(target=late).start()
d = multiprocessing.Process(target=forever, daemon=True)
d.start()
print(d.pid, flush=True)
"""


@pytest.mark.parametrize("method", METHODS)
def test_at_exit_children_are_joined_and_daemons_ended(tmp_path: Path, method: str | None) -> None:
    done = run_script(_shoal(method) + _AT_EXIT, tmp_path, "")
    assert (tmp_path / "late.txt").read_text() == "ran to its end"
    daemon = int(done.stdout.split()[0])
    wait_for(lambda: not _running(daemon), "the daemon child to end", 10, interval=0.05)


_LOST_SERVER = """
import os, signal

with multiprocessing.Manager() as manager:
    shared = manager.dict()
    shared["a"] = 1
    os.kill(manager._process.pid, signal.SIGKILL)
    manager._process.join(30)
    for attempt in (lambda: shared.__setitem__("b", 2), manager.list):
        try:
            attempt()
        except Exception as exc:
            print(isinstance(exc, (ConnectionError, EOFError)), *exc.__notes__)
"""


@pytest.mark.parametrize("method", [None, "spawn"])
def test_a_killed_manager_server_fails_its_callers_saying_so(
    tmp_path: Path, method: str | None
) -> None:
    out = run_script(_shoal(method) + _LOST_SERVER, tmp_path, "").stdout.splitlines()
    assert len(out) == 2, out
    for line in out:
        assert line.startswith("True the manager's server process (pid ")
        assert "killed by signal 9" in line
        assert "start a new manager" in line
