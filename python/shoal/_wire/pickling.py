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
from collections import ChainMap
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ClassVar, Final, Protocol

import cloudpickle  # type: ignore[import-untyped]

from shoal._wire.culprit import locate, type_name
from shoal._wire.namespaces import LEFT_OUT, ModuleNamespace, function_setstate
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
    globals their code uses; what the standard pickler takes without naming ``__main__``
    (functions importable from a module, methods of importable classes, however they
    are decorated) goes by reference, as it does with multiprocessing. A global
    that cannot be pickled (a ``multiprocessing.Value`` bound under the ``__main__``
    guard) is left out, as a spawned worker never has it until its own code sets it: an
    initializer's ``global counter; counter = c`` is what the function then reads
    (:mod:`shoal._wire.namespaces`), and reading it unset raises a ``NameError`` that says
    why. The decision is made here, once per function.

    Raises:
        shoal.errors.PicklingError: as :func:`dumps` does.
    """
    try:
        data = _dumps(fn, _PROTOCOL)
    except REFUSALS:
        pass
    else:
        if b"__main__" not in data:
            return data
    try:
        return _cloud_dumps(fn)
    except MemoryError:
        raise
    except Exception as exc:
        failure = exc
    return _cloud_dumps_or_explain(fn, failure=failure)


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
    return locate(obj, root, error, _check)


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


def _cloud_dumps_or_explain(
    obj: object, buffers: BufferSink | None = None, *, failure: BaseException | None = None
) -> bytes:
    """cloudpickle's pickle of ``obj``, or the PicklingError that says what failed. Given
    the ``failure`` of a plain attempt, it tries once more leaving out the functions'
    globals that cannot be pickled (:func:`dumps_callable`)."""
    try:
        if buffers is not None:
            buffers.restart()
        return _cloud_dumps(obj, buffers, lenient=failure is not None)
    except MemoryError:
        raise
    except Exception as exc:
        failure = failure or exc
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
    raise TypeError(f"cannot pickle {type_name(type(file))!r} object")


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
    namespace (:mod:`shoal._wire.namespaces`) and keep their file name."""

    dispatch_table: ClassVar[ChainMap[type, Callable[[Any], Any]]] = ChainMap(
        {io.TextIOWrapper: _reduce_text_file, types.CodeType: _reduce_code},
        cloudpickle.Pickler.dispatch_table,
    )

    # Set on a pickler that leaves out the globals that cannot be pickled.
    lenient = False

    def _dynamic_function_reduce(self, fn: types.FunctionType) -> tuple[Any, ...]:
        rebuild, args, state, items, pairs, _ = super()._dynamic_function_reduce(fn)
        if self.lenient:
            _leave_out_unpicklable_globals(fn, state[1], type(self))
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


def _leave_out_unpicklable_globals(
    fn: types.FunctionType, slots: dict[str, Any], pickler: type[pickle.Pickler]
) -> None:
    """Drops from a by-value function's state (cloudpickle's, a dict of its own) the
    globals ``pickler`` cannot pickle, and writes down which and why for the receiver."""
    names: dict[str, Any] = slots["__globals__"]
    left: dict[str, str] = {}
    token = _checking_with.set(pickler)
    try:
        for name, value in list(names.items()):
            error = _check(value)
            if error is not None:
                del names[name]
                left[name] = f"{type_name(type(value))}: {error}"
    finally:
        _checking_with.reset(token)
    if left:
        slots[LEFT_OUT] = (fn.__qualname__, left)


def _cloud_dumps(obj: object, buffers: BufferSink | None = None, *, lenient: bool = False) -> bytes:
    with io.BytesIO() as file:
        pickler = _CloudPickler(file, protocol=_PROTOCOL, buffer_callback=buffers)
        pickler.lenient = lenient
        pickler.dump(obj)
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
        path, culprit_type, error = locate(obj, "obj", failure, _check)
    finally:
        _checking_with.reset(token)
    reason = str(error) or type(error).__name__
    return PicklingError(path, culprit_type, reason)
