"""Making a chunk's outcome fit to send back: a result or exception that cannot be
pickled becomes that task's error, saying so, so that one bad result never loses the
others. Every backend whose workers pickle their answers (processes, clusters) calls
:func:`make_sendable` when its first attempt to pickle the whole outcome failed.

Example:
    >>> import pickle, threading
    >>> values, failures = [1, threading.Lock()], {}
    >>> make_sendable(values, failures, pickle.dumps)
    >>> values[1], type(failures[1].exception).__name__
    (None, 'ResultNotSentError')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal._wire.failure import Failure
from shoal.errors import ResultNotSentError, ShoalError

__all__ = ["make_sendable"]


def _refusal(obj: object, dumps: Callable[[object], object]) -> Exception | None:
    try:
        dumps(obj)
    except Exception as exc:
        return exc
    return None


def make_sendable(
    values: list[Any],
    failures: dict[int, Failure],
    dumps: Callable[[object], object],
) -> None:
    """Changes ``values`` and ``failures`` in place until ``dumps`` takes each part: a
    cause that does not pickle is dropped, a value that does not becomes
    :class:`shoal.ResultNotSentError`, an exception that does not becomes a
    :class:`shoal.ShoalError` that names it (keeping its traceback's text and cause)."""
    for known in failures.values():
        cause = known.exception.__cause__
        if cause is not None and _refusal(cause, dumps) is not None:
            known.exception.__cause__ = None
    for index, value in enumerate(values):
        if index in failures:
            continue
        refused = _refusal(value, dumps)
        if refused is not None:
            values[index] = None
            failures[index] = Failure(ResultNotSentError(refused, value), "")
    for index, known in list(failures.items()):
        raised = known.exception
        refused = _refusal(raised, dumps)
        if refused is not None:
            stand_in = ShoalError(
                f"the task raised {type(raised).__qualname__}: {raised} "
                f"(the exception itself could not be sent back: {refused})"
            )
            stand_in.__cause__ = raised.__cause__
            failures[index] = Failure(stand_in, known.traceback)
