"""Pool backends by name: what ``shoal.Pool(backend=...)`` accepts.

A backend is built by a :data:`~shoal.backends.base.BackendFactory` registered here under a
name; ``docs/backends.md`` describes the protocol. Factories are looked up when a Pool is
created, so registering a backend makes it available everywhere at once.

Example:
    >>> from shoal.backends import available, get_factory
    >>> "thread" in available()
    True
    >>> get_factory("nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown pool backend 'nope'; available backends: 'process', 'thread'
"""

from __future__ import annotations

from typing import Final

from shoal.backends.base import Backend, BackendFactory, ResultSink, WorkerSpec

__all__ = [
    "DEFAULT_BACKEND",
    "Backend",
    "BackendFactory",
    "available",
    "get_factory",
    "register",
]

DEFAULT_BACKEND: Final = "process"
"""The backend ``shoal.Pool`` uses when none is named."""


def _thread_factory(spec: WorkerSpec, sink: ResultSink) -> Backend:
    # Imported on first use, as every backend is, so that `import shoal` stays cheap.
    from shoal.backends.thread import ThreadBackend

    return ThreadBackend(spec, sink)


def _process_factory(spec: WorkerSpec, sink: ResultSink) -> Backend:
    from shoal.backends.process import ProcessBackend

    return ProcessBackend(spec, sink)


_FACTORIES: dict[str, BackendFactory] = {"process": _process_factory, "thread": _thread_factory}


def register(name: str, factory: BackendFactory) -> None:
    """Makes ``factory`` available as ``Pool(backend=name)``, replacing any earlier one.

    ``docs/backends.md`` has a complete example backend. In short:

    >>> from shoal.backends.thread import ThreadBackend
    >>> register("threads-again", ThreadBackend)
    >>> "threads-again" in available()
    True
    >>> del _FACTORIES["threads-again"]
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"a backend name must be a non-empty string, not {name!r}")
    _FACTORIES[name] = factory


def available() -> list[str]:
    """The names of the registered backends, sorted."""
    return sorted(_FACTORIES)


def get_factory(name: str) -> BackendFactory:
    """The factory registered as ``name``; ``ValueError`` naming the choices if none is."""
    try:
        return _FACTORIES[name]
    except (KeyError, TypeError):
        names = ", ".join(repr(n) for n in available())
        raise ValueError(f"unknown pool backend {name!r}; available backends: {names}") from None
