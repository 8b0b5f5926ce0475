"""A task that raised, as every backend reports it and as it crosses between processes:
the exception and its traceback's text (a pickle drops the traceback itself)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from shoal._wire.namespaces import explain_name_error

__all__ = ["Failure"]


@dataclass(slots=True)
class Failure:
    """A task that raised.

    Attributes:
        exception: the exception the task raised. A backend that moves it between
            processes sends it pickled; the traceback is not part of a pickle, hence:
        traceback: the worker-side traceback, formatted where it happened. The Pool chains
            it as the exception's ``__cause__`` (a :class:`shoal.pool.RemoteTraceback`).
    """

    exception: BaseException
    traceback: str

    @classmethod
    def capture(cls, exc: BaseException) -> Failure:
        """The failure for ``exc``, with its traceback formatted now (and a ``NameError``
        for a global left out of a function sent by value explained)."""
        explain_name_error(exc)
        return cls(exc, "".join(traceback.format_exception(exc)))

    def __reduce__(self) -> tuple[Any, tuple[BaseException, str, BaseException | None]]:
        """Pickles the exception's ``__cause__`` too, which pickling an exception drops
        (``raise ... from ...`` in a task is kept on every backend)."""
        return (_failure_with_cause, (self.exception, self.traceback, self.exception.__cause__))


def _failure_with_cause(exc: BaseException, text: str, cause: BaseException | None) -> Failure:
    if cause is not None and exc.__cause__ is None:
        exc.__cause__ = cause
    return Failure(exc, text)
