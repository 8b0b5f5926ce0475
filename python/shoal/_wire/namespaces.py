"""Where functions sent by value live once they arrive: one namespace per module.

cloudpickle rebuilds a function of ``__main__`` (or any function it sends by value) with
a globals dict made for that one pickle, so two functions sent apart never see each
other's globals: an initializer that sets ``global MODEL`` writes into a dict the task
never reads. A forked or spawned ``multiprocessing`` worker has one ``__main__`` that all
its functions share, and programs rely on it.

So shoal's pickler (:mod:`shoal._wire.pickling`) writes, in place of that dict, a reference to
the receiving process's namespace for the function's module (:func:`namespace_for`) and
restores the function's globals with :func:`function_setstate`, which adds the names the
namespace lacks and keeps those it has: a value an initializer or a task wrote is never
replaced by the parent's copy sent with a later function, as in a forked worker.

A process opts in with :func:`share` (every pool worker does, at start). Elsewhere (the
pool's own process reading back a function a task returned, a plain process reading a
queue) each pickle gets a fresh dict, as with cloudpickle itself, so nothing a worker
sends can write into the caller's ``__main__``.

Example:
    >>> import sys
    >>> ns = namespace_for("some_module", {"__name__": "some_module"})
    >>> ns is namespace_for("some_module", {"__name__": "some_module"})
    False
    >>> share(None)
    >>> namespace_for("some_module", {}) is namespace_for("some_module", {})
    True
    >>> namespace_for("__main__", {}) is vars(sys.modules["__main__"])
    True
    >>> _stop_sharing()
"""

from __future__ import annotations

import builtins
import sys
import types
from typing import Any

__all__ = ["LEFT_OUT", "explain_name_error", "function_setstate", "namespace_for", "share"]

LEFT_OUT = "_shoal_left_out"
"""Where a function's state names the globals left out of it (they could not be pickled):
``(qualified name, {global: why})``."""

_sharing = False
# Namespaces of modules this process does not have, by module name.
_namespaces: dict[str, dict[str, Any]] = {}
# Globals left out of the functions that arrived here, by name: the function, and why.
_left_out: dict[str, tuple[str, str]] = {}


def share(main: types.ModuleType | None) -> None:
    """Makes functions that arrive by value share one namespace per module in this
    process. ``main``, if given, becomes ``sys.modules["__main__"]``: the namespace of
    functions from the sender's ``__main__``."""
    global _sharing
    _sharing = True
    if main is not None:
        sys.modules["__main__"] = main


def _stop_sharing() -> None:
    global _sharing
    _sharing = False
    _namespaces.clear()


def namespace_for(module: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """The globals for a function of ``module`` arriving by value. ``attributes``: the
    sender's module attributes that imports inside the function need (``__name__``,
    ``__package__``, ``__path__``, ``__file__``), set where the namespace lacks them."""
    if not _sharing:
        return dict(attributes)
    home = sys.modules.get(module)
    namespace = vars(home) if home is not None else _namespaces.setdefault(module, {})
    for key, value in attributes.items():
        namespace.setdefault(key, value)
    return namespace


def function_setstate(fn: types.FunctionType, state: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Restores a function sent by value (cloudpickle's state: its ``__dict__``, then its
    globals, closure values and other attributes): globals only where the namespace has
    no value yet, so that what this process wrote there stays."""
    attributes, slots = state
    fn.__dict__.update(attributes)
    names = slots.pop("__globals__")
    closure = slots.pop("__closure__")
    slots.pop("_cloudpickle_submodules", None)  # held only to import them first
    left_out = slots.pop(LEFT_OUT, None)
    if left_out is not None:
        qualname, reasons = left_out
        for name, why in reasons.items():
            _left_out[name] = (qualname, why)
    namespace = fn.__globals__
    for name, value in names.items():
        namespace.setdefault(name, value)
    namespace.setdefault("__builtins__", builtins)
    if closure is not None:
        for cell, sent in zip(fn.__closure__ or (), closure, strict=True):
            try:
                cell.cell_contents = sent.cell_contents
            except ValueError:  # an empty cell stays empty
                continue
    for name, value in slots.items():
        setattr(fn, name, value)


def explain_name_error(exc: BaseException) -> None:
    """Adds a note to a task's ``NameError`` for a global that was left out of a function
    sent here because it could not be pickled: it is unset until this process's own code
    sets it, as in a spawned worker."""
    name = getattr(exc, "name", None)
    if type(exc) is not NameError or name not in _left_out:
        return
    qualname, why = _left_out[name]
    exc.add_note(
        f"shoal left the global {name!r} out of {qualname}() when it sent it to the "
        f"workers: it cannot be pickled ({why}). A worker has it only once code running "
        "there sets it, as in a spawned multiprocessing worker: set it in the pool's "
        "initializer (global " + name + "; " + name + " = ...), or pass it as an argument."
    )


class ModuleNamespace:
    """What a pickle holds in place of a by-value function's globals: the module's name
    and import attributes, read back as :func:`namespace_for` of them."""

    __slots__ = ("attributes", "module")

    def __init__(self, module: str, attributes: dict[str, Any]) -> None:
        self.module = module
        self.attributes = attributes

    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, Any]]]:
        return namespace_for, (self.module, self.attributes)
