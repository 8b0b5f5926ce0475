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
did, under every start method. When the server is gone (killed, or it crashed), a call
through a manager or one of its proxies fails with multiprocessing's error
(``ConnectionRefusedError``, ``BrokenPipeError``, ``EOFError``...) and a note that says
the server is gone, how it ended when that is known, and what it means.

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

# What a call to a server that is gone fails with.
_LOST = (ConnectionError, EOFError, FileNotFoundError)


def _server_lost(exc: BaseException, address: object, process: Any = None) -> None:
    """Notes on ``exc`` that the manager's server at ``address`` is gone."""
    how = ""
    code = None if process is None else process.exitcode
    if code is not None:
        ended = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        how = f" (pid {process.pid}, {ended})"
    exc.add_note(
        f"the manager's server process{how} at {address!r} is gone, and the shared "
        "objects it held with it: start a new manager (and make the objects again)"
    )


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

    def _create(self, typeid: str, /, *args: Any, **kwds: Any) -> Any:
        try:
            return super()._create(typeid, *args, **kwds)  # type: ignore[misc]
        except _LOST as exc:
            _server_lost(exc, self.address, getattr(self, "_process", None))
            raise


class _SaysWhenLost:
    """A proxy whose calls, once its manager's server is gone, say so."""

    def _callmethod(self, methodname: str, args: Any = (), kwds: Any = None) -> Any:
        try:
            return super()._callmethod(methodname, args, kwds or {})  # type: ignore[misc]
        except _LOST as exc:
            manager = getattr(self, "_manager", None)
            token: Any = getattr(self, "_token", None)
            _server_lost(exc, getattr(token, "address", None), getattr(manager, "_process", None))
            raise


def _saying_when_lost(proxytype: Any) -> Any:
    """``proxytype`` (a proxy class, or ``AutoProxy``) made to say when its server is
    gone; the classes are this module's, so that proxies pickle by reference."""
    if proxytype is _AutoProxy:
        return _auto_proxy
    name = f"{proxytype.__name__}"
    found = globals().get(name)
    if found is None:
        found = type(name, (_SaysWhenLost, proxytype), {"__module__": __name__})
        globals()[name] = found
    return found


_autos: dict[type[Any], type[Any]] = {}
_AutoProxy: Any = vars(managers)["AutoProxy"]  # (not in the stubs)


def _auto_proxy(*args: Any, **kwds: Any) -> Any:
    """``multiprocessing.managers.AutoProxy``, its class made to say when its server is
    gone (it still pickles as an ``AutoProxy``)."""
    proxy = _AutoProxy(*args, **kwds)
    cls = type(proxy)
    if cls not in _autos:
        _autos[cls] = type(cls.__name__, (_SaysWhenLost, cls), {"__module__": __name__})
    proxy.__class__ = _autos[cls]
    return proxy


class SyncManager(BaseManager, managers.SyncManager):
    """``multiprocessing.managers.SyncManager`` (``dict``, ``list``, ``Queue``, ``Lock``,
    ``Value``... proxies), its server a ``shoal.Process``. ``shoal.Manager()`` starts
    one."""


for _typeid, (_callable, _exposed, _method_to_typeid, _proxytype) in list(
    managers.SyncManager._registry.items()  # type: ignore[attr-defined]
):
    SyncManager.register(
        _typeid,
        _callable,
        _saying_when_lost(_proxytype),
        _exposed,
        _method_to_typeid,
        create_method=_typeid in vars(managers.SyncManager),
    )


class SharedMemoryManager(BaseManager, managers.SharedMemoryManager):
    """``multiprocessing.managers.SharedMemoryManager``, its server a ``shoal.Process``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) < 4:
            kwargs.setdefault("ctx", _PROGRAM)
        managers.SharedMemoryManager.__init__(self, *args, **kwargs)


def Manager() -> SyncManager:
    """A started :class:`shoal.managers.SyncManager`, as ``multiprocessing.Manager()``
    returns one; use it in a ``with`` block, or call its ``shutdown()``."""
    manager = SyncManager()
    manager.start()
    return manager
