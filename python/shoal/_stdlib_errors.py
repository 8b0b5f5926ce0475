"""The exceptions of :mod:`shoal.errors` whose standard-library bases are slow to import:
:class:`InitializerError` is a ``concurrent.futures`` ``BrokenProcessPool`` and
``BrokenThreadPool``, :class:`ResultNotSentError` a ``multiprocessing.pool``
``MaybeEncodingError``. ``shoal.errors`` loads this module when one of them is first
named, so that a worker, which imports ``shoal.errors`` as it starts, does not import
those modules; each class presents itself as ``shoal.errors``'s (its name in tracebacks,
and how it pickles).
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import BrokenThreadPool
from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]

from shoal.errors import ShoalError

__all__ = ["InitializerError", "ResultNotSentError"]


class ResultNotSentError(ShoalError, MaybeEncodingError):  # type: ignore[misc]
    """A task's result could not be pickled to be sent back: that task fails with this
    (the pool and the other results go on). It is ``multiprocessing.pool.MaybeEncodingError``
    too, so code that catches that catches it.

    Attributes:
        exc: ``repr`` of the pickler's error.
        value: ``repr`` of the result that could not be sent.

    Example:
        >>> err = ResultNotSentError(TypeError("cannot pickle 'lock'"), "<lock>")
        >>> print(err)
        the task's result could not be sent back to the caller: cannot pickle 'lock'
        >>> err.value
        "'<lock>'"
    """

    def __init__(self, exc: BaseException, value: object) -> None:
        """``exc``: the pickler's error; ``value``: the result that could not be sent."""
        self.reason = str(exc)
        self.exc = repr(exc)
        self.value = repr(value)
        Exception.__init__(self, self.exc, self.value)

    def __str__(self) -> str:
        return f"the task's result could not be sent back to the caller: {self.reason}"

    def __reduce__(self) -> tuple[object, tuple[str, str, str]]:
        """Pickles as texts: the error and the result may not pickle themselves."""
        return (_rebuild_result_not_sent, (self.reason, self.exc, self.value))


def _rebuild_result_not_sent(reason: str, exc: str, value: str) -> ResultNotSentError:
    err = ResultNotSentError.__new__(ResultNotSentError)
    err.reason, err.exc, err.value = reason, exc, value
    Exception.__init__(err, exc, value)
    return err


class InitializerError(ShoalError, BrokenProcessPool, BrokenThreadPool):
    """A :class:`shoal.Executor`'s initializer raised: the executor is broken, as a
    ``concurrent.futures`` executor is. Its pending futures fail with this error and
    ``submit`` raises it. It is a ``BrokenProcessPool`` and a ``BrokenThreadPool`` (so a
    ``concurrent.futures.BrokenExecutor``), whichever executor the code was written for;
    the initializer's own exception is its ``__cause__``.

    Attributes:
        initializer: the initializer's name.
        error: the initializer's exception, as ``Type: message``.

    Example:
        >>> from concurrent.futures import BrokenExecutor
        >>> err = InitializerError("load_model", "OSError: no such file")
        >>> isinstance(err, BrokenExecutor), err.initializer
        (True, 'load_model')
        >>> str(err).startswith("the executor's initializer load_model() raised OSError")
        True
    """

    initializer: str
    error: str

    def __init__(self, initializer: str, error: str) -> None:
        """Builds the message from the initializer's name and its error."""
        self.initializer = initializer
        self.error = error
        super().__init__(
            f"the executor's initializer {initializer}() raised {error}; the executor is"
            " broken (its pending tasks fail, new ones are refused): fix the initializer,"
            " or catch its error inside it"
        )

    def __reduce__(self) -> tuple[type[InitializerError], tuple[str, str]]:
        """Pickles by the constructor's arguments."""
        return (type(self), (self.initializer, self.error))


ResultNotSentError.__module__ = InitializerError.__module__ = "shoal.errors"
