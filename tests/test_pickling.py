"""shoal._wire.pickling: what pickles (and comes back intact), and how a failure is reported."""

from __future__ import annotations

import functools
import io
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal._wire.namespaces import explain_name_error
from shoal._wire.pickling import dumps, dumps_callable, find_unpicklable, loads
from shoal.errors import PicklingError, ShoalError

# --- module-level helpers: importable, so they pickle by reference ----------------------


class Point:
    """A plain class with a method."""

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


class Holder:
    """Holds a socket, as a client object holding its connection would."""

    def __init__(self, conn: socket.socket) -> None:
        self.name = "client"
        self.conn = conn

    def send(self) -> None:
        self.conn.send(b"")


class Slotted:
    """A class with __slots__, one of them name-mangled."""

    __slots__ = ("__secret", "label")

    def __init__(self, secret: object) -> None:
        self.label = "slotted"
        self.__secret = secret


class RenamingState:
    """Pickles a state that is not its __dict__."""

    def __init__(self, resource: object) -> None:
        self.resource = resource

    def __getstate__(self) -> dict[str, object]:
        return {"renamed": self.resource}


class BrokenReduce:
    """An object whose own __reduce__ fails with an error that is not about pickling."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise ValueError("BrokenReduce refuses on purpose")


class OnlyMp:
    """Refused by the standard pickler; a reducer registered with multiprocessing takes it."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("OnlyMp needs its multiprocessing reducer")


def _rebuild_only_mp(value: int) -> OnlyMp:
    return OnlyMp(value)


def _reduce_only_mp(obj: OnlyMp) -> tuple[Callable[[int], OnlyMp], tuple[int]]:
    return _rebuild_only_mp, (obj.value,)


def module_function(x: int) -> int:
    return x * 10


def roundtrip(obj: object) -> Any:
    return loads(dumps(obj))


def pickling_error(obj: object) -> PicklingError:
    with pytest.raises(PicklingError) as info:
        dumps(obj)
    return info.value


def assert_reported(err: PicklingError, path: str, culprit_type: str) -> None:
    """The error names the path and the type, gives the advice, and is a pickle error."""
    assert (err.path, err.culprit_type) == (path, culprit_type)
    message = str(err)
    assert message.startswith(f"cannot send {path} ({culprit_type}): ")
    assert path in message
    assert culprit_type in message
    assert 'backend="thread"' in message
    assert "create them inside the worker" in message
    assert isinstance(err, pickle.PicklingError)
    assert isinstance(err, ShoalError)
    assert isinstance(err.__cause__, Exception)


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    with socket.socket() as s:
        yield s


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        42,
        -(2**100),
        3.5,
        1 + 2j,
        "text ✓",
        b"\x00bytes",
        bytearray(b"ba"),
        [1, [2, [3]]],
        (1, "a", None),
        {"a": 1, 2: [3]},
        {1, 2, 3},
        frozenset({"x"}),
        range(3, 9, 2),
        Point(1, 2).__dict__,
    ],
)
def test_builtin_values_round_trip(value: object) -> None:
    assert roundtrip(value) == value


def test_plain_data_is_exactly_standard_pickle() -> None:
    data = {"k": [1, 2.0, "three"], "p": Point(3, 4)}
    assert dumps(data) == pickle.dumps(data, protocol=5)


def test_instance_and_bound_method_round_trip() -> None:
    p = roundtrip(Point(3, -4))
    assert isinstance(p, Point)
    assert (p.x, p.y) == (3, -4)
    assert roundtrip(Point(3, -4).norm1)() == 7


def test_lambda_round_trips() -> None:
    assert roundtrip(lambda x: x * 2)(21) == 42


def test_closure_round_trips() -> None:
    def make_adder(n: int) -> Callable[[int], int]:
        def add(x: int) -> int:
            return x + n

        return add

    assert roundtrip(make_adder(5))(1) == 6


def test_nested_recursive_function_round_trips() -> None:
    def outer() -> Callable[[int], int]:
        def fact(n: int) -> int:
            return 1 if n <= 1 else n * fact(n - 1)

        return fact

    assert roundtrip(outer())(5) == 120


def test_local_class_and_its_instances_round_trip() -> None:
    class Local:
        factor = 3

        def __init__(self, v: int) -> None:
            self.v = v

        def scaled(self) -> int:
            return self.v * self.factor

    cls = roundtrip(Local)
    assert cls(2).scaled() == 6
    obj = roundtrip(Local(4))
    assert obj.scaled() == 12
    assert roundtrip(Local(5).scaled)() == 15


def test_partials_round_trip() -> None:
    assert roundtrip(functools.partial(pow, 2))(10) == 1024
    assert roundtrip(functools.partial(lambda a, b: a - b, b=1))(5) == 4


def test_list_mixing_data_and_lambdas_round_trips() -> None:
    fns = roundtrip([1, lambda: "a", {"f": lambda x: x + 1}])
    assert fns[0] == 1
    assert fns[1]() == "a"
    assert fns[2]["f"](1) == 2


def test_multiprocessing_registered_reducer_is_used() -> None:
    from multiprocessing.reduction import ForkingPickler

    ForkingPickler.register(OnlyMp, _reduce_only_mp)
    with pytest.raises(TypeError):
        pickle.dumps(OnlyMp(1))
    back = roundtrip([OnlyMp(7)])
    assert isinstance(back[0], OnlyMp)
    assert back[0].value == 7


def test_loads_accepts_memoryview() -> None:
    assert loads(memoryview(dumps([1, 2]))) == [1, 2]


def test_dumps_callable_round_trips() -> None:
    lock_free = 3
    fn = loads(dumps_callable(lambda x: x + lock_free))
    assert callable(fn)
    assert fn(1) == 4


def test_dumps_callable_pickles_importable_functions_by_reference() -> None:
    assert loads(dumps_callable(module_function)) is module_function


def test_dumps_callable_sends_main_functions_by_value(tmp_path: Path) -> None:
    """A function of __main__ arrives in a fresh interpreter that never defined it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    sender = textwrap.dedent(
        """
        import sys
        from shoal._wire.pickling import dumps_callable

        SCALE = 3

        def helper(x):
            return x + 1

        def task(x):
            return helper(x) * SCALE

        sys.stdout.write(dumps_callable(task).hex())
        """
    )
    receiver = textwrap.dedent(
        """
        import sys
        from shoal._wire.pickling import loads

        print(loads(bytes.fromhex(sys.stdin.read()))(2))
        """
    )
    run = functools.partial(
        subprocess.run, capture_output=True, text=True, check=True, env=env, timeout=60
    )
    payload = run([sys.executable, "-c", sender]).stdout
    assert run([sys.executable, "-c", receiver], input=payload).stdout.strip() == "9"


# --- failures: what is named ----------------------------------------------------------


def test_socket_in_an_instance(sock: socket.socket) -> None:
    threads_before = set(threading.enumerate())
    err = pickling_error(Holder(sock))
    assert_reported(err, "obj.conn", "socket.socket")
    assert "cannot pickle 'socket' object" in str(err)
    assert isinstance(err.__cause__, TypeError)
    # No socket went to multiprocessing's resource sharer (it would start a thread).
    assert set(threading.enumerate()) == threads_before


def test_socket_behind_a_bound_method(sock: socket.socket) -> None:
    assert_reported(pickling_error(Holder(sock).send), "obj.__self__.conn", "socket.socket")


def test_lock_in_a_closure() -> None:
    def make() -> Callable[[], bool]:
        lock = threading.Lock()

        def locked() -> bool:
            return lock.locked()

        return locked

    assert_reported(pickling_error(make()), "obj.__closure__[0].cell_contents", "_thread.lock")


def test_lock_in_a_dict_in_a_list() -> None:
    err = pickling_error([1, {"a": 2, "lock": threading.Lock()}])
    assert_reported(err, "obj[1]['lock']", "_thread.lock")


def test_lock_as_a_dict_key() -> None:
    assert_reported(pickling_error({threading.Lock(): 1}), "list(obj)[0]", "_thread.lock")


def test_generator() -> None:
    err = pickling_error({"rows": (i for i in range(3))})
    assert_reported(err, "obj['rows']", "generator")
    assert_reported(pickling_error(i for i in range(3)), "obj", "generator")


@pytest.mark.parametrize(
    ("mode", "culprit_type"),
    [("w", "_io.TextIOWrapper"), ("r", "_io.TextIOWrapper"), ("rb", "_io.BufferedReader")],
)
def test_open_file(tmp_path: Path, mode: str, culprit_type: str) -> None:
    path = tmp_path / "log.txt"
    path.write_text("contents")
    with open(path, mode) as file:
        err = pickling_error({"log": file})
        assert_reported(err, "obj['log']", culprit_type)
        # Read-only files too are refused, even where a lambda sends the rest on cloudpickle.
        assert_reported(pickling_error([lambda: 1, file]), "obj[1]", culprit_type)


def test_lock_in_partial_arguments() -> None:
    lock = threading.Lock()
    assert_reported(pickling_error(functools.partial(print, lock)), "obj.args[0]", "_thread.lock")
    err = pickling_error(functools.partial(print, file=lock))
    assert_reported(err, "obj.keywords['file']", "_thread.lock")


def test_lock_in_globals_of_a_function_sent_by_value() -> None:
    namespace: dict[str, Any] = {"__name__": "not_an_importable_module", "LOCK": threading.Lock()}
    exec("def uses_lock():\n    return LOCK.locked()\n", namespace)
    fn = namespace["uses_lock"]
    assert_reported(pickling_error(fn), "obj.__globals__['LOCK']", "_thread.lock")
    with pytest.raises(PicklingError) as info:
        dumps([fn])  # as data (a task's argument), it fails naming the global
    assert_reported(info.value, "obj[0].__globals__['LOCK']", "_thread.lock")
    # Sent as a function (the pool's functions, its initializer), the global is left out,
    # as a spawned worker would not have it: reading it unset says why.
    arrived = loads(dumps_callable(fn))
    assert callable(arrived)
    with pytest.raises(NameError) as unset:
        arrived()
    explain_name_error(unset.value)
    (note,) = unset.value.__notes__
    assert "left the global 'LOCK' out of uses_lock()" in note
    assert "_thread.lock" in note
    assert "initializer" in note


def test_lock_in_a_mangled_slot() -> None:
    assert_reported(
        pickling_error(Slotted(threading.Lock())), "obj._Slotted__secret", "_thread.lock"
    )


def test_lock_in_a_custom_state() -> None:
    err = pickling_error(RenamingState(threading.Lock()))
    assert_reported(err, "obj.__reduce_ex__(5)[2]['renamed']", "_thread.lock")


def test_lock_in_a_local_class_attribute() -> None:
    class WithLock:
        guard = threading.Lock()

    assert_reported(pickling_error(WithLock()), "type(obj).guard", "_thread.lock")


def test_lock_in_an_exception_argument() -> None:
    err = pickling_error(RuntimeError("failed", threading.Lock()))
    assert_reported(err, "obj.args[1]", "_thread.lock")


def test_cycles_are_followed_once() -> None:
    class Node:
        pass

    node = Node()
    node.__dict__.update(me=node, items=[node, {"node": node}, threading.Lock()])
    assert_reported(pickling_error(node), "obj.items[2]", "_thread.lock")


def test_large_container_finds_the_one_culprit() -> None:
    data: list[object] = [(i, str(i)) for i in range(10_000)]
    data[7_777] = [threading.Lock()]
    assert_reported(pickling_error(data), "obj[7777][0]", "_thread.lock")


def test_the_walk_stops_at_depth_50() -> None:
    nested: list[object] = [threading.Lock()]
    for _ in range(60):
        nested = [nested]
    path, culprit_type, error = find_unpicklable(nested) or ("", "", None)
    assert path == "obj" + "[0]" * 50
    assert culprit_type == "list"
    assert "_thread.lock" in str(error)


def test_dumps_callable_reports_the_path() -> None:
    lock = threading.Lock()
    with pytest.raises(PicklingError) as info:
        dumps_callable(lambda: lock.locked())
    assert_reported(info.value, "obj.__closure__[0].cell_contents", "_thread.lock")


def test_errors_that_are_not_about_pickling_pass_through() -> None:
    with pytest.raises(ValueError, match="refuses on purpose"):
        dumps(BrokenReduce())


# --- find_unpicklable and the error itself ---------------------------------------------


def test_find_unpicklable_returns_none_when_all_pickles() -> None:
    assert find_unpicklable([1, {"a": lambda: 2}, Point(1, 2)]) is None


def test_find_unpicklable_names_from_the_given_root(sock: socket.socket) -> None:
    found = find_unpicklable({"client": Holder(sock)}, root="message")
    assert found is not None
    path, culprit_type, error = found
    assert (path, culprit_type) == ("message['client'].conn", "socket.socket")
    assert isinstance(error, TypeError)


def test_error_message_and_attributes() -> None:
    err = PicklingError("obj.conn", "socket.socket", "cannot pickle 'socket' object")
    assert str(err) == (
        "cannot send obj.conn (socket.socket): cannot pickle 'socket' object. Objects that "
        "hold OS resources (locks, sockets, open files) cannot go to another process; create "
        'them inside the worker, or use backend="thread" to share objects without pickling.'
    )
    assert (err.path, err.culprit_type, err.reason) == (
        "obj.conn",
        "socket.socket",
        "cannot pickle 'socket' object",
    )


def test_the_error_itself_crosses_processes() -> None:
    err = PicklingError("obj[0]", "_thread.lock", "cannot pickle '_thread.lock' object")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, PicklingError)
    assert (back.path, back.culprit_type, back.reason, str(back)) == (
        err.path,
        err.culprit_type,
        err.reason,
        str(err),
    )


def test_stdout_still_travels_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # cloudpickle sends the standard streams by name; refusing other text files keeps that.
    stream = io.TextIOWrapper(io.BytesIO())
    assert find_unpicklable(stream) is not None
    monkeypatch.setattr(sys, "stdout", stream)
    assert find_unpicklable(stream) is None
    assert roundtrip([lambda: 0, stream])[1] is stream
