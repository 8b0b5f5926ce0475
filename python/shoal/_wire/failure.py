"""A task that raised, as every backend reports it and as it crosses between processes:
the exception and its traceback's text (a pickle drops the traceback itself).

One type on both sides of a process worker: a plain class with slots rather than a
dataclass, so that the worker processes that import it stay light.

Example:
    >>> import pickle
    >>> try:
    ...     try:
    ...         {}["key"]
    ...     except KeyError as exc:
    ...         raise ValueError("no key") from exc
    ... except ValueError as exc:
    ...     failure = Failure.capture(exc)
    >>> back = pickle.loads(pickle.dumps(failure))
    >>> back.exception, type(back.exception.__cause__).__name__
    (ValueError('no key'), 'KeyError')
"""

from __future__ import annotations

from typing import Any

from shoal._wire.namespaces import explain_name_error

__all__ = ["Failure"]


class Failure:
    """A task that raised.

    Attributes:
        exception: the exception the task raised. A backend that moves it between
            processes sends it pickled; the traceback is not part of a pickle, hence:
        traceback: the worker-side traceback, formatted where it happened. The Pool chains
            it as the exception's ``__cause__`` (a :class:`multiprocessing.pool.RemoteTraceback`).
    """

    __slots__ = ("exception", "traceback")

    def __init__(self, exception: BaseException, traceback: str) -> None:
        self.exception = exception
        self.traceback = traceback

    @classmethod
    def capture(cls, exc: BaseException) -> Failure:
        """The failure for ``exc``, with its traceback formatted now (and a ``NameError``
        for a global left out of a function sent by value explained)."""
        import traceback  # (rarely needed: loaded then)

        explain_name_error(exc)
        return cls(exc, "".join(traceback.format_exception(exc)))

    @classmethod
    def capture_in_worker(cls, exc: BaseException, *, from_task: bool = False) -> Failure:
        """As a process worker captures ``exc``: its traceback formatted now, and its
        frames' locals dropped, which would keep the task's arguments alive (large ones'
        shared-memory blocks included) until the failure is sent. ``from_task``: the
        exception came out of the user's function, and the traceback starts there (the
        worker's own frame that called it says nothing to the user)."""
        import traceback

        tb = exc.__traceback__
        if from_task:
            explain_name_error(exc)
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        traceback.clear_frames(tb)
        return cls(exc, text)

    def __reduce__(self) -> tuple[Any, tuple[BaseException, str, BaseException | None]]:
        """Pickles the exception's ``__cause__`` too, which pickling an exception drops
        (``raise ... from ...`` in a task is kept on every backend)."""
        return (_failure_with_cause, (self.exception, self.traceback, self.exception.__cause__))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Failure):
            return NotImplemented
        return (self.exception, self.traceback) == (other.exception, other.traceback)

    __hash__ = None  # type: ignore[assignment]  # (mutable, compared by value: unhashable)

    def __repr__(self) -> str:
        return f"Failure(exception={self.exception!r}, traceback={self.traceback!r})"


def _failure_with_cause(exc: BaseException, text: str, cause: BaseException | None) -> Failure:
    if cause is not None and exc.__cause__ is None:
        exc.__cause__ = cause
    return Failure(exc, text)
