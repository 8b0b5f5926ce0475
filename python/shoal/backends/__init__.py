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
    ValueError: unknown pool backend 'nope'; available backends: 'dask', ...'thread'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from shoal.backends.base import Backend, BackendFactory, ResultSink, WorkerSpec

__all__ = [
    "DEFAULT_BACKEND",
    "Backend",
    "BackendFactory",
    "available",
    "check_options",
    "get_factory",
    "prepare",
    "register",
]

DEFAULT_BACKEND: Final = "process"
"""The backend ``shoal.Pool`` uses when none is named."""


def check_options(backend: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
    """``TypeError`` naming the first of ``options`` the backend does not take.

    >>> check_options("dask", {"start_method": "spawn"}, ("address", "client"))
    Traceback (most recent call last):
    ...
    TypeError: the dask backend takes no option 'start_method' (it takes 'address', 'client')
    """
    allowed = tuple(known)
    for name in options:
        if name not in allowed:
            takes = ", ".join(repr(k) for k in allowed) or "none"
            raise TypeError(f"the {backend} backend takes no option {name!r} (it takes {takes})")


def _thread_factory(spec: WorkerSpec, sink: ResultSink, **options: Any) -> Backend:
    # Imported on first use, as every backend is, so that `import shoal` stays cheap.
    from shoal.backends.thread import ThreadBackend

    check_options("thread", options, ("thread_name_prefix",))
    return ThreadBackend(spec, sink, **options)


def _process_factory(spec: WorkerSpec, sink: ResultSink, **options: Any) -> Backend:
    from shoal.backends.process import OPTIONS, ProcessBackend

    check_options("process", options, OPTIONS)
    return ProcessBackend(spec, sink, **options)


def _dask_factory(spec: WorkerSpec, sink: ResultSink, **options: Any) -> Backend:
    from shoal.backends.dask import OPTIONS, DaskBackend

    check_options("dask", options, OPTIONS)
    return DaskBackend(spec, sink, **options)


def _ray_factory(spec: WorkerSpec, sink: ResultSink, **options: Any) -> Backend:
    from shoal.backends.ray import OPTIONS, RayBackend

    check_options("ray", options, OPTIONS)
    return RayBackend(spec, sink, **options)


def _prepare_process() -> None:
    from shoal._process.zygote import prestart

    prestart()


_FACTORIES: dict[str, BackendFactory] = {
    "dask": _dask_factory,
    "process": _process_factory,
    "ray": _ray_factory,
    "thread": _thread_factory,
}
# What to do when a program looks up shoal.Pool, before it makes one (the process backend
# boots its zygote meanwhile).
_PREPARE: dict[str, Callable[[], None]] = {"process": _prepare_process}


def prepare(name: str) -> None:
    """Lets backend ``name`` get ready for a pool about to be made, if it has a way to;
    never raises for an unknown name (the Pool will)."""
    hook = _PREPARE.get(name)
    if hook is not None:
        hook()


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


def __getattr__(name: str) -> Any:
    # The protocol's names, loaded on first use: looking up shoal.Pool starts the
    # process backend's zygote (prepare) before base.py and its imports load.
    if name in ("Backend", "BackendFactory"):
        from shoal.backends import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
