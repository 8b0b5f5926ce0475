"""Finding the part of an object that cannot be pickled, for errors that name it.

When every pickler refused an object, :func:`locate` walks down from it, always into the
first part that fails on its own (container items and dict keys, instance attributes,
closures, defaults and globals of functions, class attributes, and for anything else what
its ``__reduce_ex__(5)`` returns), and returns the innermost: ``obj.conn`` of type
``socket.socket``, say. Each object is entered once, the walk stops 50 levels down or
after 1,000 objects, and long lists are halved rather than tried item by item. The check
of one part is the caller's (``shoal._wire.pickling`` checks with the pickler that failed).

Example:
    >>> import cloudpickle, threading
    >>> def check(obj):
    ...     try:
    ...         cloudpickle.dumps(obj)
    ...     except Exception as exc:
    ...         return exc
    ...     return None
    >>> value = {"fine": [1, 2], "bad": threading.Lock()}
    >>> locate(value, "obj", check(value), check)[:2]
    ("obj['bad']", '_thread.lock')
"""

from __future__ import annotations

import copyreg
import functools
import types
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, Final, NamedTuple

__all__ = ["Check", "locate", "type_name"]

Check = Callable[[object], BaseException | None]
"""The error pickling an object gives, or None when it pickles."""

_PROTOCOL: Final = 5  # the pickle protocol the parts are taken for, as shoal pickles

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


def type_name(cls: type) -> str:
    """``cls``'s qualified name, as an error names it (``"_thread.lock"``)."""
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in (None, "builtins") else f"{module}.{name}"


def locate(
    obj: object, root: str, error: BaseException, check: Check
) -> tuple[str, str, BaseException]:
    """Descends from ``obj`` (known to fail with ``error``) to its innermost failing part:
    its path from ``root``, its type's name, and the error ``check`` gave for it."""
    if isinstance(error.__cause__, RecursionError):  # too deep to pickle: no single culprit
        return root, type_name(type(obj)), error
    found = _Search(check).descend(obj, root, error, 0)
    return found.path, type_name(type(found.culprit)), found.error


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

    def __init__(self, check: Check) -> None:
        self.check = check
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
            error = self.check(part[2])
            if error is None:
                self.cleared[id(part[2])] = part[2]
            else:
                yield part, error

    def _bisect(self, parts: list[_Part]) -> int:
        """The index of the first failing part, found by halving, as if one fails: if none
        does, the last part, and the caller's check of it says so."""
        values = [part[2] for part in parts]
        start, end = 0, len(values)
        while end - start > 1:
            middle = (start + end) // 2
            if self.check(values[start:middle]) is None:
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
