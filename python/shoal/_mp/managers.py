"""``shoal.Manager()`` and shoal's ``BaseManager``, ``SyncManager`` and
``SharedMemoryManager``: multiprocessing's managers, their server started as a
``shoal.Process``.

multiprocessing starts a manager's server as a ``Process`` of the program's start method:
under spawn and forkserver (Python 3.14's default on Linux) a script needs the
``__main__`` guard, and the types a ``BaseManager`` subclass registers must be
importable by name. shoal starts the server as a ``shoal.Process`` (forked from the
zygote; multiprocessing's fork under the fork start method): no guard, and a manager
class and the types it registers in the script travel by value. The proxies are
multiprocessing's, so they work from Pool tasks, Processes and threads as they always
did, under every start method.

Example:
    >>> import shoal
    >>> with shoal.Manager() as manager:
    ...     shared = manager.dict()
    ...     with shoal.Pool(2) as pool:
    ...         _ = pool.starmap(shared.__setitem__, [("a", 1), ("b", 2)])
    ...     sorted(shared.items())
    [('a', 1), ('b', 2)]
"""

from __future__ import annotations

from multiprocessing import managers
from typing import Any

__all__ = ["BaseManager", "Manager", "SharedMemoryManager", "SyncManager"]


class _ProgramContext:
    """What a manager asks of its context: a ``Process`` (shoal's, which follows the
    program's start method when it starts); everything else is multiprocessing's."""

    @property
    def Process(self) -> type[Any]:
        from shoal._mp.process import Process

        return Process

    def __getattr__(self, name: str) -> Any:
        import multiprocessing

        return getattr(multiprocessing, name)


_PROGRAM = _ProgramContext()


class BaseManager(managers.BaseManager):
    """``multiprocessing.managers.BaseManager``, its server a ``shoal.Process`` unless
    ``ctx`` says otherwise. Subclass it and ``register`` types as with multiprocessing;
    the script needs no ``__main__`` guard.

    Example:
        >>> from shoal.managers import BaseManager
        >>> class Counter:
        ...     def __init__(self): self.n = 0
        ...     def add(self, k): self.n += k; return self.n
        >>> class CounterManager(BaseManager): pass
        >>> CounterManager.register("Counter", Counter)
        >>> with CounterManager() as manager:
        ...     counter = manager.Counter()
        ...     counter.add(2), counter.add(3)
        (2, 5)
    """

    def __init__(
        self,
        address: Any = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: Any = None,
        **options: Any,
    ) -> None:
        # (A context in all but name: it has the Process a manager starts.)
        context: Any = ctx or _PROGRAM
        super().__init__(address, authkey, serializer, context, **options)


class SyncManager(BaseManager, managers.SyncManager):
    """``multiprocessing.managers.SyncManager`` (``dict``, ``list``, ``Queue``, ``Lock``,
    ``Value``... proxies), its server a ``shoal.Process``. ``shoal.Manager()`` starts
    one."""


class SharedMemoryManager(BaseManager, managers.SharedMemoryManager):
    """``multiprocessing.managers.SharedMemoryManager``, its server a ``shoal.Process``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) < 4:
            kwargs.setdefault("ctx", _PROGRAM)
        managers.SharedMemoryManager.__init__(self, *args, **kwargs)


def Manager() -> SyncManager:
    """A started :class:`SyncManager`, as ``multiprocessing.Manager()`` returns one; use it
    in a ``with`` block, or call its ``shutdown()``."""
    manager = SyncManager()
    manager.start()
    return manager
