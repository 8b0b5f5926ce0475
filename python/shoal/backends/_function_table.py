"""The functions a process pool's workers know: each distinct function object is pickled
once and sent once per worker, under a number of its own.

A function that lives at module level (or cannot be weakly referenced: builtins) is kept
for the pool's life, as it would live as long anyway. Any other callable (a bound
method, which ``obj.method`` makes afresh at each access; a lambda; a closure; a
``partial``) is held here only weakly: the backend's record of each chunk of it keeps it
while the chunk is out (``shoal.backends._in_flight``). Once the caller has dropped it and
its chunks are answered, it is forgotten here and in every worker
(``PoolEngine.forget``). So ``submit(self.method, x)`` in a loop neither keeps ``self``
alive nor makes every process keep one copy per call.

An entry is found by the object's ``id``; a weakly held object leaves the table when it
dies, before its ``id`` can be reused.

Example:
    >>> defined, forgotten = [], []
    >>> table = FunctionTable(lambda n, blob: defined.append(n), forgotten.append)
    >>> class Model:
    ...     def predict(self, x): return x
    >>> model = Model()
    >>> method = model.predict
    >>> table.number(method), table.number(abs), table.number(method)
    (0, 1, 0)
    >>> out = {7: method}  # a chunk of it, out
    >>> del method; forgotten
    []
    >>> del out[7]; forgotten
    [0]
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import types
import weakref
from collections.abc import Callable
from typing import Any

from shoal._wire.pickling import dumps_callable
from shoal.backends.base import Failure

__all__ = ["FunctionTable"]


def _lives_for_ever(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is reachable from its module by name (or cannot be weakly
    referenced): keeping it costs nothing it would not cost anyway."""
    if isinstance(fn, types.BuiltinFunctionType | type):
        return True
    if not isinstance(fn, types.FunctionType):
        return False
    module = sys.modules.get(fn.__module__)
    found: Any = module
    for part in fn.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is fn


class FunctionTable:
    """Function numbers by object, for one pool; ``define(number, blob)`` and
    ``forget(number)`` reach its engine. Called by the pool's submitting thread
    (``number``); an entry leaves wherever its function's last reference goes."""

    def __init__(self, define: Callable[[int, bytes], None], forget: Callable[[int], None]) -> None:
        self._define = define
        self._forget = forget
        self._numbers = itertools.count()
        # id(fn) -> (fn itself, or a weak reference to it; its number or pickling error)
        self.entries: dict[int, tuple[object, int | Failure]] = {}

    def number(self, fn: Callable[..., Any]) -> int | Failure:
        """``fn``'s number (defining it with the engine the first time), or the error
        pickling it raised."""
        entry = self.entries.get(id(fn))
        if entry is not None:
            return entry[1]
        func: int | Failure
        try:
            blob = dumps_callable(fn)
        except Exception as exc:
            func = Failure.capture(exc)
        else:
            func = next(self._numbers)
            self._define(func, blob)
        holder: object = fn
        if not _lives_for_ever(fn):
            with contextlib.suppress(TypeError):  # cannot be weakly referenced: kept
                holder = weakref.ref(fn, self._on_death(id(fn), func))
        self.entries[id(fn)] = (holder, func)
        return func

    def _on_death(self, key: int, func: int | Failure) -> Callable[[object], None]:
        def forget(_: object) -> None:
            self.entries.pop(key, None)
            if isinstance(func, int):
                self._forget(func)

        return forget
