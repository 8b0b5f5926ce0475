"""shoal's exceptions.

Every error shoal raises on its own account derives from :class:`ShoalError`, and each one
also derives from the standard library exception with the same meaning, so code written for
``multiprocessing`` and ``pickle`` keeps catching what it caught before.
"""

from __future__ import annotations

import pickle

__all__ = ["PicklingError", "ShoalError"]

_HINT = (
    "Objects that hold OS resources (locks, sockets, open files) cannot go to another "
    'process; create them inside the worker, or use backend="thread" to share objects '
    "without pickling."
)


class ShoalError(Exception):
    """Base class of the exceptions raised by shoal itself."""


class PicklingError(ShoalError, pickle.PicklingError):
    """An object could not be pickled to be sent to another process.

    Raised in place of the pickler's own error (which is chained as ``__cause__``), naming
    the innermost part of the object that could not be pickled.

    Attributes:
        path: where the culprit sits inside the object that was sent, as a Python
            expression rooted at ``obj``, e.g. ``"obj.conn"`` or ``"obj[1]['lock']"``.
        culprit_type: the qualified type name of the culprit, e.g. ``"socket.socket"`` or
            ``"_thread.lock"``.
        reason: the pickler's own message about the culprit, e.g.
            ``"cannot pickle 'socket' object"``.

    Example:
        >>> err = PicklingError("obj.conn", "socket.socket", "cannot pickle 'socket' object")
        >>> str(err).split(". ")[0]
        "cannot send obj.conn (socket.socket): cannot pickle 'socket' object"
    """

    path: str
    culprit_type: str
    reason: str

    def __init__(self, path: str, culprit_type: str, reason: str) -> None:
        """Builds the message from where the culprit is, its type and why it failed."""
        self.path = path
        self.culprit_type = culprit_type
        self.reason = reason
        detail = reason.strip().rstrip(".") or "cannot be pickled"
        super().__init__(f"cannot send {path} ({culprit_type}): {detail}. {_HINT}")

    def __reduce__(self) -> tuple[type[PicklingError], tuple[str, str, str]]:
        """Pickles by the constructor's arguments, so the error itself can cross processes."""
        return (type(self), (self.path, self.culprit_type, self.reason))
