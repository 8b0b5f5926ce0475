"""The rest of a multiprocessing submodule, for shoal's submodule of the same name.

``shoal.connection``, ``shoal.managers`` and the others are multiprocessing's modules with
shoal's objects where shoal has its own; every other name is the multiprocessing
module's, looked up there on first use (module ``__getattr__``), so that private names
programs reach for (``multiprocessing.connection.Connection``, ``util._logger``) are
there too.

Example:
    >>> __getattr__ = mirror("multiprocessing.connection")
    >>> __getattr__("Connection").__module__
    'multiprocessing.connection'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["mirror"]


def mirror(name: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that finds each name in multiprocessing's module ``name``
    (``AttributeError`` naming shoal's module where it has none)."""
    mine = "shoal." + name.removeprefix("multiprocessing.")

    def __getattr__(attribute: str) -> Any:
        module = importlib.import_module(name)
        try:
            return getattr(module, attribute)
        except AttributeError:
            raise AttributeError(f"module {mine!r} has no attribute {attribute!r}") from None

    return __getattr__
