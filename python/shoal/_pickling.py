"""Pickling for messages and tasks, with errors that say which part could not be pickled.

``dumps`` tries the standard pickler first and costs nothing more than ``pickle.dumps`` when
that works. Only an object the standard pickler refuses goes on to multiprocessing's
``ForkingPickler`` (reducers registered with ``multiprocessing.reduction.register``) and then
to cloudpickle (lambdas, closures, local classes, objects of ``__main__``). When all of them
fail, :class:`shoal.errors.PicklingError` names the innermost culprit, e.g.
``cannot send obj.conn (socket.socket): ...``.

``loads`` is ``pickle.loads`` itself (no wrapper, no extra call): it reads what every one of
the picklers above writes.

Two refusals are deliberate, so that an object holding an OS resource fails loudly instead
of arriving as something else: ``ForkingPickler``'s reducers that pass file descriptors
through multiprocessing's resource sharer (sockets, ``multiprocessing`` connections) are
left out, and a text file opened with ``open()`` is refused where cloudpickle on its own
would send a snapshot of its contents (``sys.stdout`` and ``sys.stderr`` still travel by
name).
"""

from __future__ import annotations

import copyreg
import functools
import io
import pickle
import sys
import types
from collections import ChainMap, defaultdict, deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from itertools import islice
from typing import Any, ClassVar, Final, NamedTuple, Protocol

import cloudpickle  # type: ignore[import-untyped]

from shoal._namespaces import ModuleNamespace, function_setstate
from shoal.errors import PicklingError

__all__ = [
    "REFUSALS",
    "BufferSink",
    "dumps",
    "dumps_callable",
    "dumps_detached",
    "find_unpicklable",
    "loads",
    "pickling_error",
]

_PROTOCOL: Final = 5
_dumps: Final = pickle.dumps
# The exceptions by which the standard pickler says "I cannot pickle this"; anything else
# (RecursionError, an error raised by the object's own __reduce__) is not ours to reroute.
REFUSALS: Final = (pickle.PicklingError, TypeError, AttributeError)

loads: Callable[[bytes | memoryview], object] = pickle.loads


class BufferSink(Protocol):
    """Where a pickler's protocol-5 buffers may go instead of into the pickle (the
    ``buffer_callback`` of :func:`pickle.dumps`: false keeps a buffer out of band)."""

    def __call__(self, buffer: pickle.PickleBuffer) -> bool: ...

    def restart(self) -> None:
        """Forgets (and frees) what it took: the pickling is starting over."""


def dumps(obj: object, buffers: BufferSink | None = None) -> bytes:
    """Pickles ``obj`` for another process (protocol 5).

    The standard pickler first; if it refuses the object, ``ForkingPickler`` and then
    cloudpickle, which also takes lambdas, closures, local classes and objects defined in
    ``__main__``.

    With ``buffers``, protocol-5 buffers (numpy arrays, ``PickleBuffer``) are offered to
    it and those it takes stay out of the pickle.

    Raises:
        shoal.errors.PicklingError: no pickler could pickle ``obj``; the error names the path
            to the innermost culprit and chains cloudpickle's own error as ``__cause__``.
    """
    try:
        return _dumps(obj, _PROTOCOL, buffer_callback=buffers)
    except REFUSALS:
        pass
    # Outside the handler, so that a final error does not drag the first one along.
    return _dumps_slow(obj, buffers)


def dumps_detached(obj: object, buffers: BufferSink | None = None) -> bytes:
    """Like :func:`dumps`, for a process that does not share this one's ``__main__`` (a
    pool worker forked by the zygote or spawned): an object that the standard pickler
    would send as a reference into ``__main__`` (an instance of a class defined in a
    script) goes by value through cloudpickle instead.

    Raises:
        shoal.errors.PicklingError: as :func:`dumps` does.
    """
    data = dumps(obj, buffers)
    # A reference into __main__ spells the module's name; other mentions only cost time.
    if b"__main__" not in data:
        return data
    return _cloud_dumps_or_explain(obj, buffers)


def dumps_callable(fn: object) -> bytes:
    """Pickles a function (or any callable, or a tuple holding some) for another process
    with cloudpickle.

    Functions of ``__main__``, local functions, lambdas and closures go by value, with the
    globals their code uses; functions importable from a module go by reference.

    Raises:
        shoal.errors.PicklingError: as :func:`dumps` does.
    """
    return _cloud_dumps_or_explain(fn)


def find_unpicklable(obj: object, root: str = "obj") -> tuple[str, str, BaseException] | None:
    """Finds the innermost part of ``obj`` that cloudpickle cannot pickle.

    Walks down from ``obj`` through container items (and dict keys), instance attributes
    (``__dict__`` and ``__slots__``), the closure cells, defaults and used globals of
    functions, bound methods, ``functools.partial`` objects, class attributes and, for any
    other object, what its ``__reduce_ex__(5)`` returns, always into the first part that
    fails on its own. Objects already visited are skipped and the walk stops 50 levels down.

    Args:
        obj: the object to examine.
        root: how ``obj`` is named at the start of the returned path.

    Returns:
        ``None`` if ``obj`` pickles. Otherwise ``(path, type_name, error)``: a Python
        expression reaching the culprit from ``root``, such as ``"obj[1]['lock']"`` or
        ``"obj.__closure__[0].cell_contents"``; the culprit's qualified type name, such as
        ``"_thread.lock"``; and the error pickling the culprit raised.
    """
    error = _check(obj)
    if error is None:
        return None
    return _locate(obj, root, error)


# --- the picklers past the fast path ---------------------------------------------------


def _dumps_slow(obj: object, buffers: BufferSink | None = None) -> bytes:
    try:
        if buffers is not None:
            buffers.restart()
        return _mp_dumps(obj, buffers)
    except MemoryError:
        raise
    except Exception:
        pass
    return _cloud_dumps_or_explain(obj, buffers)


def _cloud_dumps_or_explain(obj: object, buffers: BufferSink | None = None) -> bytes:
    """cloudpickle's pickle of ``obj``, or the PicklingError that says what failed."""
    try:
        if buffers is not None:
            buffers.restart()
        return _cloud_dumps(obj, buffers)
    except MemoryError:
        raise
    except Exception as exc:
        failure = exc
    raise pickling_error(obj, failure) from failure


def _fd_passing_types() -> set[type]:
    """Types whose ForkingPickler reducers hand a descriptor to multiprocessing's resource
    sharer (a server thread in this process); they are refused rather than sent that way."""
    import socket

    found: set[type] = {socket.socket}
    connection = sys.modules.get("multiprocessing.connection")
    if connection is not None:
        found.add(connection.Connection)
    heap = sys.modules.get("multiprocessing.heap")
    if heap is not None:
        found.add(heap.Arena)
    return found


@functools.cache
def _forking_pickler() -> type[pickle.Pickler]:
    """``ForkingPickler`` without the reducers that pass file descriptors. Built on first
    use: multiprocessing takes a while to import and most messages never need it."""
    from multiprocessing.reduction import ForkingPickler

    class _ForkingPickler(ForkingPickler):
        def __init__(
            self, file: io.BytesIO, protocol: int, buffer_callback: BufferSink | None = None
        ) -> None:
            # ForkingPickler.__init__ takes no keywords: the buffer callback goes to
            # pickle.Pickler's, then the reducer table is set up as ForkingPickler's does.
            pickle.Pickler.__init__(self, file, protocol, buffer_callback=buffer_callback)
            # (ForkingPickler's table: copyreg's, then what multiprocessing registered.)
            reducers = {**copyreg.dispatch_table, **vars(ForkingPickler)["_extra_reducers"]}
            # Looked up each time: multiprocessing's modules may be imported later.
            refused = _fd_passing_types()
            self.dispatch_table = {
                cls: reduce for cls, reduce in reducers.items() if cls not in refused
            }

    return _ForkingPickler


def _mp_dumps(obj: object, buffers: BufferSink | None = None) -> bytes:
    with io.BytesIO() as file:
        _forking_pickler()(file, _PROTOCOL, buffer_callback=buffers).dump(obj)
        return file.getvalue()


def _reduce_text_file(file: io.TextIOWrapper) -> tuple[Any, tuple[Any, ...]]:
    """Standard streams by name, any other text file refused like binary files are."""
    if file is sys.stdout:
        return getattr, (sys, "stdout")
    if file is sys.stderr:
        return getattr, (sys, "stderr")
    raise TypeError(f"cannot pickle {_type_name(type(file))!r} object")


def _reduce_code(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """Code keeps its file name: cloudpickle writes ``<dynamic-code>`` instead, and then a
    worker's traceback shows neither the user's file nor the failing line."""
    rebuild, args = _cloud_code_reduce(code)
    return rebuild, (*args[:_FILENAME_AT], code.co_filename, *args[_FILENAME_AT + 1 :])


_cloud_code_reduce: Final = cloudpickle.cloudpickle._code_reduce
# Where cloudpickle's code arguments hold the file name, in this version of Python.
_FILENAME_AT: Final = _cloud_code_reduce(compile("", "", "exec"))[1].index("<dynamic-code>")


class _CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's pickler, refusing open text files as the standard pickler does, and
    sending functions by value so that, in a worker, those of one module share one
    namespace (:mod:`shoal._namespaces`) and keep their file name."""

    dispatch_table: ClassVar[ChainMap[type, Callable[[Any], Any]]] = ChainMap(
        {io.TextIOWrapper: _reduce_text_file, types.CodeType: _reduce_code},
        cloudpickle.Pickler.dispatch_table,
    )

    def _dynamic_function_reduce(self, fn: types.FunctionType) -> tuple[Any, ...]:
        rebuild, args, state, items, pairs, _ = super()._dynamic_function_reduce(fn)
        return rebuild, args, state, items, pairs, function_setstate

    def _function_getnewargs(self, fn: types.FunctionType) -> tuple[Any, ...]:
        # cloudpickle's first answer for these globals is the dict of import attributes
        # it would send; later ones (memoized by the globals' id) are what we put back.
        code, namespace, name, defaults, closure = super()._function_getnewargs(fn)
        if not isinstance(namespace, ModuleNamespace):
            module = namespace.get("__name__")
            namespace = ModuleNamespace(module if isinstance(module, str) else "", namespace)
            self.globals_ref[id(fn.__globals__)] = namespace
        return code, namespace, name, defaults, closure


def _cloud_dumps(obj: object, buffers: BufferSink | None = None) -> bytes:
    with io.BytesIO() as file:
        _CloudPickler(file, protocol=_PROTOCOL, buffer_callback=buffers).dump(obj)
        return file.getvalue()


class _Discard:
    """A file that forgets what is written: checks need no output, only success."""

    def write(self, data: object) -> None:
        del data


_DISCARD: Final = _Discard()


def _keep_out_of_band(buffer: pickle.PickleBuffer) -> bool:
    """Protocol-5 buffers stay out of band during checks: large arrays are not copied."""
    del buffer
    return False


# The pickler whose failures a search explains (one made for a new process, while its
# dumps explains a failure).
_checking_with: ContextVar[type[pickle.Pickler]] = ContextVar("checking_with")


def _check(obj: object) -> BaseException | None:
    """The error cloudpickle raises for ``obj``, or None if it pickles."""
    pickler = _checking_with.get(_CloudPickler)
    try:
        pickler(_DISCARD, protocol=_PROTOCOL, buffer_callback=_keep_out_of_band).dump(obj)
    except MemoryError:
        raise
    except Exception as exc:
        return exc
    return None


def pickling_error(
    obj: object, failure: BaseException, pickler: type[pickle.Pickler] | None = None
) -> PicklingError:
    """The error that names the innermost part of ``obj`` that ``pickler`` (shoal's
    cloudpickle pickler by default) fails on, ``failure`` being how it failed on ``obj``."""
    token = _checking_with.set(pickler or _CloudPickler)
    try:
        path, type_name, error = _locate(obj, "obj", failure)
    finally:
        _checking_with.reset(token)
    reason = str(error) or type(error).__name__
    return PicklingError(path, type_name, reason)


# --- finding the culprit ---------------------------------------------------------------

_MAX_DEPTH: Final = 50
# At most this many objects are entered in one search, which bounds its time.
_MAX_ENTERED: Final = 1_000
_MAX_REDUCED_ITEMS: Final = 100_000
# Above this many parts, the failing one is found by halving instead of one by one.
_BISECT_ABOVE: Final = 16
# Types that always pickle: never worth a check.
_ATOMIC: Final = frozenset(
    {
        type(None),
        type(Ellipsis),
        type(NotImplemented),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        bytearray,
        range,
    }
)
_MISSING: Final = object()

# A part of an object: (format of its path from the parent's path ``{0}`` and the key
# ``{1}``, key, value).
_Part = tuple[str, object, object]

_ITEM: Final = "{0}[{1!r}]"
_NTH: Final = "list({0})[{1}]"
_ATTR: Final = "{0}.{1}"
_VARS_ITEM: Final = "vars({0})[{1!r}]"


def _type_name(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in (None, "builtins") else f"{module}.{name}"


def _locate(obj: object, root: str, error: BaseException) -> tuple[str, str, BaseException]:
    """Descends from ``obj`` (known to fail with ``error``) to its innermost failing part."""
    if isinstance(error.__cause__, RecursionError):  # too deep to pickle: no single culprit
        return root, _type_name(type(obj)), error
    found = _Search().descend(obj, root, error, 0)
    return found.path, _type_name(type(found.culprit)), found.error


class _Found(NamedTuple):
    path: str
    culprit: object
    error: BaseException
    # False when the culprit may fail only through an object already entered (a cycle, or
    # a failing object shared with another branch): then another branch is tried.
    conclusive: bool


class _Search:
    """One walk. Each object is entered once, and objects known to pickle are remembered;
    both maps hold the objects, which keeps their ids from being reused meanwhile."""

    def __init__(self) -> None:
        self.entered: dict[int, object] = {}
        self.cleared: dict[int, object] = {}
        self.budget = _MAX_ENTERED

    def descend(self, obj: object, path: str, error: BaseException, depth: int) -> _Found:
        self.entered[id(obj)] = obj
        self.budget -= 1
        if depth >= _MAX_DEPTH or self.budget <= 0:
            return _Found(path, obj, error, True)
        try:
            parts = [part for part in _parts(obj) if type(part[2]) not in _ATOMIC]
        except Exception:
            parts = []
        fallback: _Found | None = None
        for (fmt, key, value), part_error in self._failing(parts):
            found = self.descend(value, fmt.format(path, key), part_error, depth + 1)
            if found.conclusive or self.budget <= 0:
                return found
            fallback = fallback or found
        if fallback is not None:
            return fallback
        through_entered = any(id(part[2]) in self.entered for part in parts)
        return _Found(path, obj, error, not through_entered)

    def _failing(self, parts: list[_Part]) -> Iterator[tuple[_Part, BaseException]]:
        """The parts that fail on their own, in order, with their errors."""
        pending = parts
        while True:
            pending = [
                part
                for part in pending
                if id(part[2]) not in self.entered and id(part[2]) not in self.cleared
            ]
            if not pending:
                return
            start = self._bisect(pending) if len(pending) > _BISECT_ABOVE else 0
            part = pending[start]
            pending = pending[start + 1 :]
            error = _check(part[2])
            if error is None:
                self.cleared[id(part[2])] = part[2]
            else:
                yield part, error

    @staticmethod
    def _bisect(parts: list[_Part]) -> int:
        """The index of the first failing part, found by halving, as if one fails: if none
        does, the last part, and the caller's check of it says so."""
        values = [part[2] for part in parts]
        start, end = 0, len(values)
        while end - start > 1:
            middle = (start + end) // 2
            if _check(values[start:middle]) is None:
                start = middle
            else:
                end = middle
        return start


def _attr(name: object, value: object) -> str:
    """``obj.name`` where that reads the stored value back, ``vars(obj)[name]`` otherwise."""
    if isinstance(name, str) and name.isidentifier() and not hasattr(type(value), "__get__"):
        return _ATTR
    return _VARS_ITEM


def _parts(obj: object) -> list[_Part]:
    """The parts of ``obj`` that pickling it pickles, most telling first."""
    if isinstance(obj, type):
        return _class_parts(obj)
    if isinstance(obj, dict):
        parts = _dict_parts(obj)
        if isinstance(obj, defaultdict):
            parts.append(("{0}.default_factory", None, obj.default_factory))
        return parts + _instance_dict_parts(obj, type(obj) is not dict)
    if isinstance(obj, list | tuple | deque):
        parts = [(_ITEM, i, value) for i, value in enumerate(obj)]
        return parts + _instance_dict_parts(obj, type(obj) not in (list, tuple))
    if isinstance(obj, set | frozenset):
        parts = [(_NTH, i, value) for i, value in enumerate(obj)]
        return parts + _instance_dict_parts(obj, type(obj) not in (set, frozenset))
    if isinstance(obj, types.FunctionType):
        return _function_parts(obj)
    if isinstance(obj, types.MethodType):
        return [("{0}.__self__", None, obj.__self__), ("{0}.__func__", None, obj.__func__)]
    if isinstance(obj, types.BuiltinMethodType):
        owner = obj.__self__
        return [] if isinstance(owner, types.ModuleType) else [("{0}.__self__", None, owner)]
    if isinstance(obj, functools.partial):
        return (
            [("{0}.func", None, obj.func)]
            + [("{0}.args[{1}]", i, arg) for i, arg in enumerate(obj.args)]
            + [("{0}.keywords[{1!r}]", k, arg) for k, arg in obj.keywords.items()]
        )
    if isinstance(obj, classmethod | staticmethod):
        return [("{0}.__func__", None, obj.__func__)]
    if isinstance(obj, property):
        return [(f"{{0}}.{name}", None, getattr(obj, name)) for name in ("fget", "fset", "fdel")]
    if isinstance(obj, BaseException):
        parts = [("{0}.args[{1}]", i, arg) for i, arg in enumerate(obj.args)]
        return parts + _instance_dict_parts(obj, True)
    if _default_state(type(obj)):
        return (
            _instance_dict_parts(obj, False) + _slot_parts(obj) + [("type({0})", None, type(obj))]
        )
    return _reduce_parts(obj)


def _dict_parts(mapping: dict[Any, Any]) -> list[_Part]:
    parts: list[_Part] = []
    for i, (key, value) in enumerate(mapping.items()):
        parts.append((_ITEM, key, value))
        if type(key) not in _ATOMIC:
            parts.append((_NTH, i, key))
    return parts


def _instance_dict_parts(obj: object, with_class: bool) -> list[_Part]:
    """The attributes in the instance ``__dict__``, and the class itself if asked."""
    attrs = getattr(obj, "__dict__", None)
    parts: list[_Part] = []
    if isinstance(attrs, dict):
        parts = [(_attr(name, value), name, value) for name, value in attrs.items()]
    if with_class:  # a local class goes by value and may be the culprit
        parts.append(("type({0})", None, type(obj)))
    return parts


def _slot_parts(obj: object) -> list[_Part]:
    parts: list[_Part] = []
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{cls.__name__.lstrip('_')}{name}"  # the mangled name
            value = getattr(obj, name, _MISSING)
            if value is not _MISSING:
                parts.append((_ATTR, name, value))
    return parts


def _default_state(cls: type) -> bool:
    """Whether instances pickle as their class plus ``__dict__`` and ``__slots__`` values."""
    return (
        getattr(cls, "__reduce_ex__", None) is object.__reduce_ex__
        and getattr(cls, "__reduce__", None) is object.__reduce__
        and getattr(cls, "__getstate__", None) is object.__getstate__
        and cls not in copyreg.dispatch_table
    )


def _class_parts(cls: type) -> list[_Part]:
    parts: list[_Part] = [(_attr(name, value), name, value) for name, value in vars(cls).items()]
    parts += [("{0}.__bases__[{1}]", i, base) for i, base in enumerate(cls.__bases__)]
    return parts


def _code_names(code: types.CodeType) -> Iterator[str]:
    """The global names a code object and the code nested in it may read."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _function_parts(fn: types.FunctionType) -> list[_Part]:
    parts: list[_Part] = []
    for i, cell in enumerate(fn.__closure__ or ()):
        try:
            parts.append(("{0}.__closure__[{1}].cell_contents", i, cell.cell_contents))
        except ValueError:  # an empty cell
            continue
    names = dict.fromkeys(_code_names(fn.__code__))
    parts += [
        ("{0}.__globals__[{1!r}]", n, fn.__globals__[n]) for n in names if n in fn.__globals__
    ]
    parts += [("{0}.__defaults__[{1}]", i, value) for i, value in enumerate(fn.__defaults__ or ())]
    kwdefaults = fn.__kwdefaults__ or {}
    parts += [("{0}.__kwdefaults__[{1!r}]", k, value) for k, value in kwdefaults.items()]
    parts += [(_attr(name, value), name, value) for name, value in vars(fn).items()]
    return parts


def _reduce_parts(obj: object) -> list[_Part]:
    """The parts of what ``obj``'s reducer returns: state and items first, as the most
    telling, then the arguments and the callable (often just the object's class)."""
    reducer = copyreg.dispatch_table.get(type(obj))
    if reducer is not None:
        reduced: object = reducer(obj)
        base = "copyreg.dispatch_table[type({0})]({0})"
    else:
        reduced = obj.__reduce_ex__(_PROTOCOL)
        base = "{0}.__reduce_ex__(5)"
    if not isinstance(reduced, tuple) or len(reduced) < 2:
        return []
    parts: list[_Part] = []
    state = reduced[2] if len(reduced) > 2 else None
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        parts += _state_parts(obj, state[0], base + "[2][0]")
        parts += _state_parts(obj, state[1], base + "[2][1]")
    else:
        parts += _state_parts(obj, state, base + "[2]")
    if len(reduced) > 3 and isinstance(reduced[3], Iterator):
        items = islice(reduced[3], _MAX_REDUCED_ITEMS)
        parts += [(f"list({base}[3])[{{1}}]", i, item) for i, item in enumerate(items)]
    if len(reduced) > 4 and isinstance(reduced[4], Iterator):
        for key, value in islice(reduced[4], _MAX_REDUCED_ITEMS):
            parts.append((f"dict({base}[4])[{{1!r}}]", key, value))
    if isinstance(reduced[1], tuple):
        parts += [(base + "[1][{1}]", i, arg) for i, arg in enumerate(reduced[1])]
    parts.append((base + "[0]", None, reduced[0]))
    return parts


def _state_parts(obj: object, state: object, path: str) -> list[_Part]:
    """A reduced state's parts, as ``obj.attr`` where the state holds the attribute itself."""
    if state is None:
        return []
    if not isinstance(state, dict):
        return [(path, None, state)]
    parts: list[_Part] = []
    for key, value in state.items():
        fmt = path + "[{1!r}]"
        if isinstance(key, str) and key.isidentifier():
            try:
                if getattr(obj, key, _MISSING) is value:
                    fmt = _ATTR
            except Exception:
                pass
        parts.append((fmt, key, value))
    return parts
