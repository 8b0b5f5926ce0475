"""multiprocessing's contexts and start methods, with shoal's objects in them.

``shoal.get_context(method)`` is multiprocessing's context of that name in which the Pool,
the queues, the locks and the shared values are shoal's; everything else (``Process``,
``Manager``, ``Pipe``, ``get_logger``...) is multiprocessing's own. A shoal Pool starts its
workers by the context's method: ``"fork"`` forks them from this process; ``"spawn"`` and
``"forkserver"`` (a fresh interpreter, nothing inherited) use shoal's zygote, a fresh
interpreter that forks them, which is what both promise and faster than either.

``shoal.set_start_method`` sets multiprocessing's (so ``Process`` follows it) and the
default of every shoal Pool made afterwards without ``start_method=``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
from typing import Any, Final

__all__ = ["ShoalContext", "get_context", "pool_method_for", "set_start_method"]

# A shoal Pool's start method for each of multiprocessing's.
_POOL_METHODS: Final = {"fork": "fork", "spawn": "zygote", "forkserver": "zygote"}

# Names a context makes shoal's (each from where ``shoal`` itself finds it).
_SHOAL_NAMES: Final = frozenset(
    {
        "Queue",
        "SimpleQueue",
        "JoinableQueue",
        "Lock",
        "Semaphore",
        "BoundedSemaphore",
        "RLock",
        "Condition",
        "Event",
        "Barrier",
        "Value",
        "Array",
        "RawValue",
        "RawArray",
    }
)


def pool_method_for(method: str) -> str:
    """A shoal Pool's start method for multiprocessing's ``method``.

    Example:
        >>> pool_method_for("fork"), pool_method_for("spawn")
        ('fork', 'zygote')
    """
    try:
        return _POOL_METHODS[method]
    except KeyError:
        choices = ", ".join(repr(m) for m in _POOL_METHODS)
        raise ValueError(f"cannot find context for {method!r}; choose one of {choices}") from None


class ShoalContext:
    """A multiprocessing context whose Pool, queues, locks and shared values are shoal's.

    Example:
        >>> import shoal
        >>> ctx = shoal.get_context("spawn")
        >>> ctx.get_start_method(), type(ctx.Queue()).__name__
        ('spawn', 'Queue')
        >>> with ctx.Pool(1) as pool:
        ...     pool.apply(len, ("abc",))
        3
    """

    def __init__(self, inner: multiprocessing.context.BaseContext) -> None:
        self._inner = inner

    def Pool(
        self,
        processes: int | None = None,
        initializer: Any = None,
        initargs: Any = (),
        maxtasksperchild: int | None = None,
        **options: Any,
    ) -> Any:
        """A ``shoal.Pool`` whose workers start by this context's method."""
        from shoal.pool import Pool

        if options.get("backend") in (None, "process"):
            options.setdefault("context", self._inner)
        return Pool(processes, initializer, initargs, maxtasksperchild, **options)

    def get_context(self, method: str | None = None) -> ShoalContext:
        """The context of ``method`` (this one's for ``None``)."""
        return self if method is None else get_context(method)

    @property
    def Process(self) -> type[Any]:
        """This context's ``Process``: shoal's (its child forked from the zygote, no
        ``__main__`` guard needed) for spawn and forkserver, multiprocessing's for fork."""
        from shoal._mp.process import process_class

        return process_class(self._inner.get_start_method())

    def __getattr__(self, name: str) -> Any:
        if name in _SHOAL_NAMES:
            import shoal

            return getattr(shoal, name)
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"<shoal context {self._inner.get_start_method()!r}>"


def get_context(method: str | None = None) -> ShoalContext:
    """multiprocessing's context ``method`` (its default for ``None``), with shoal's Pool,
    queues, locks and shared values.

    Example:
        >>> import shoal
        >>> shoal.get_context("fork").get_start_method()
        'fork'
    """
    if method is not None:
        pool_method_for(method)  # the error names the methods a Pool knows
    return ShoalContext(multiprocessing.get_context(method))


def set_start_method(method: str | None, force: bool = False) -> None:
    """Sets multiprocessing's start method (``multiprocessing.set_start_method``) and the
    one shoal Pools made afterwards use when given no ``start_method=``.

    Example:
        >>> import shoal
        >>> shoal.set_start_method("spawn", force=True)
        >>> shoal.get_start_method()
        'spawn'
        >>> shoal.set_start_method(None, force=True)
    """
    from shoal._process.launch import set_default_start_method

    pool_method = None if method is None else pool_method_for(method)
    multiprocessing.set_start_method(method, force=force)
    set_default_start_method(pool_method)
