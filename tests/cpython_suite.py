"""CPython's own multiprocessing Pool and Queue tests, made concrete for shoal.

``test._test_multiprocessing`` holds abstract test classes (``_TestPool``, ``_TestQueue``
...) that read what they test from a mixin: ``self.Pool``, ``self.Queue``,
``self.Process``... CPython's ``test_multiprocessing_fork``/``_spawn`` combine each with
``ProcessesMixin`` or ``ThreadsMixin``; here the same classes are combined with mixins
whose ``Pool`` and ``Queue`` are shoal's, and everything shoal does not offer
(``Process``, ``Event``, ``Lock``...) stays multiprocessing's, from the start method
each class names.

Some CPython tests call ``multiprocessing.Pool`` or ``multiprocessing.Queue`` by name
rather than through the mixin (``_TestPoolWorkerErrors``, ``_TestPoolWorkerLifetime``,
``_TestQueue.test_timeout``...): while a test of a process class runs, those names are
pointed at shoal too, or those tests would test multiprocessing.

This is a module of its own, imported by ``test_cpython_suite``, because the spawn start
method pickles a test's worker functions (classmethods of these classes) by reference:
a child imports this module by its name, from ``tests/`` on ``sys.path``.

``EXPECTED_FAILURES`` names every test known to fail against shoal today, with why;
each runs as ``unittest.expectedFailure``, so one that starts passing fails the suite
("unexpected success") until it is taken off the table. ``NOT_APPLICABLE`` names the
tests that exercise multiprocessing's internals rather than its API; they are skipped.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.dummy
import unittest
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

# The stdlib's own test package ships no type information.
from test import _test_multiprocessing as cpython  # type: ignore[import-not-found]

import shoal
import shoal.dummy

__all__ = [
    "EXPECTED_FAILURES",
    "NOT_APPLICABLE",
    "WithProcessesTestPool",
    "WithProcessesTestPoolWorkerErrors",
    "WithProcessesTestPoolWorkerLifetime",
    "WithProcessesTestQueue",
    "WithSpawnTestQueue",
    "WithThreadsTestPool",
]

# (concrete class, test method): why it fails against shoal today.
_PUT_PICKLES = (
    "put() pickles at once and raises shoal.errors.PicklingError (there is no feeder "
    "thread to report the error and drop the object, as multiprocessing's does)"
)
EXPECTED_FAILURES: dict[tuple[str, str], str] = {
    ("WithProcessesTestPoolWorkerErrors", "test_unpickleable_result"): (
        "its unpicklable result is a lambda, which shoal sends back (cloudpickle); a result "
        "that cannot be pickled fails with ResultNotSentError, a MaybeEncodingError "
        "(test_pool_process.py)"
    ),
    ("WithProcessesTestQueue", "test_queue_feeder_donot_stop_onexc"): _PUT_PICKLES,
    ("WithSpawnTestQueue", "test_queue_feeder_donot_stop_onexc"): _PUT_PICKLES,
}

# (concrete class, test method): why it cannot apply to shoal at all.
_FEEDER_HOOK = "subclasses multiprocessing.queues.Queue to test its feeder thread's hook"
_SUBPROCESS = "runs multiprocessing's own Pool in a fresh interpreter, out of this harness's reach"
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("WithProcessesTestQueue", "test_queue_feeder_on_queue_feeder_error"): _FEEDER_HOOK,
    ("WithSpawnTestQueue", "test_queue_feeder_on_queue_feeder_error"): _FEEDER_HOOK,
    (
        "WithProcessesTestPoolWorkerLifetime",
        "test_worker_finalization_via_atexit_handler_of_multiprocessing",
    ): _SUBPROCESS,
}


def _process_attrs(start_method: str) -> dict[str, Any]:
    """The mixin attributes of a process class: shoal's Pool and Queue, the rest from
    multiprocessing's context for ``start_method`` (the one CPython's
    ``test_multiprocessing_<start_method>`` would use)."""
    ctx = multiprocessing.get_context(start_method)
    return {
        "Pool": staticmethod(shoal.Pool),
        "Queue": staticmethod(shoal.Queue),
        "JoinableQueue": staticmethod(shoal.JoinableQueue),
        # The stubs give BaseContext no Process; every concrete context has one.
        "Process": ctx.Process,  # type: ignore[attr-defined]
        "current_process": staticmethod(multiprocessing.current_process),
        "parent_process": staticmethod(multiprocessing.parent_process),
        "active_children": staticmethod(multiprocessing.active_children),
        "Pipe": staticmethod(ctx.Pipe),
        "Lock": staticmethod(ctx.Lock),
        "RLock": staticmethod(ctx.RLock),
        "Semaphore": staticmethod(ctx.Semaphore),
        "BoundedSemaphore": staticmethod(ctx.BoundedSemaphore),
        "Condition": staticmethod(ctx.Condition),
        "Event": staticmethod(ctx.Event),
        "Barrier": staticmethod(ctx.Barrier),
        "Value": staticmethod(ctx.Value),
        "Array": staticmethod(ctx.Array),
        "RawValue": staticmethod(ctx.RawValue),
        "RawArray": staticmethod(ctx.RawArray),
        "setUp": _redirect_multiprocessing,
    }


def _redirect_multiprocessing(self: unittest.TestCase) -> None:
    """Points the names some tests call directly (``multiprocessing.Pool(2)``) at shoal
    for the duration of one test."""
    for name, value in (
        ("Pool", shoal.Pool),
        ("Queue", shoal.Queue),
        ("JoinableQueue", shoal.JoinableQueue),
    ):
        self.enterContext(mock.patch.object(multiprocessing, name, value))


def _thread_attrs() -> dict[str, Any]:
    """The mixin attributes of a thread class: ``shoal.dummy``'s Pool and Queue, the rest
    from ``multiprocessing.dummy``."""
    dummy = multiprocessing.dummy
    return {
        "Pool": staticmethod(shoal.dummy.Pool),
        "Queue": staticmethod(shoal.dummy.Queue),
        "JoinableQueue": staticmethod(shoal.dummy.JoinableQueue),
        "Process": dummy.Process,
        "current_process": staticmethod(dummy.current_process),
        "active_children": staticmethod(dummy.active_children),
        "Pipe": staticmethod(dummy.Pipe),
        "Lock": staticmethod(dummy.Lock),
        "RLock": staticmethod(dummy.RLock),
        "Semaphore": staticmethod(dummy.Semaphore),
        "BoundedSemaphore": staticmethod(dummy.BoundedSemaphore),
        "Condition": staticmethod(dummy.Condition),
        "Event": staticmethod(dummy.Event),
        "Barrier": staticmethod(dummy.Barrier),
        "Value": staticmethod(dummy.Value),
        "Array": staticmethod(dummy.Array),
    }


def _tests_of(base: type) -> Iterator[str]:
    return (name for name in dir(base) if name.startswith("test"))


def _marked(test: Callable[..., Any], mark: Callable[[Callable[..., Any]], Any]) -> Any:
    # A wrapper of its own: the mark sets an attribute on the function, and the function
    # is shared with every other class built from the same CPython class.
    @functools.wraps(test)
    def run(self: unittest.TestCase, *args: Any, **kwargs: Any) -> Any:
        return test(self, *args, **kwargs)

    return mark(run)


def _concrete(name: str, base: type, mixin: type, attrs: dict[str, Any]) -> type[unittest.TestCase]:
    """``class <name>(base, mixin, unittest.TestCase)`` with ``attrs``, as CPython's
    ``install_tests_in_module_dict`` builds it, and the marks this harness's tables give
    its tests. It lives in this module under ``name``, so that it pickles by reference."""
    namespace: dict[str, Any] = {**attrs, "__module__": __name__, "__qualname__": name}
    for test in _tests_of(base):
        reason = NOT_APPLICABLE.get((name, test))
        if reason is not None:
            namespace[test] = _marked(getattr(base, test), unittest.skip(reason))
            continue
        reason = EXPECTED_FAILURES.get((name, test))
        if reason is not None:
            namespace[test] = _marked(getattr(base, test), unittest.expectedFailure)
    unknown = {
        test
        for table in (EXPECTED_FAILURES, NOT_APPLICABLE)
        for cls, test in table
        if cls == name and test not in set(_tests_of(base))
    }
    if unknown:
        raise LookupError(f"{name} has no tests named {sorted(unknown)}")
    cls = type(name, (base, mixin, unittest.TestCase), namespace)
    return cls


_ProcessesMixin: type = cpython.ProcessesMixin
_ThreadsMixin: type = cpython.ThreadsMixin

WithProcessesTestPool = _concrete(
    "WithProcessesTestPool", cpython._TestPool, _ProcessesMixin, _process_attrs("fork")
)
WithProcessesTestPoolWorkerErrors = _concrete(
    "WithProcessesTestPoolWorkerErrors",
    cpython._TestPoolWorkerErrors,
    _ProcessesMixin,
    _process_attrs("fork"),
)
WithProcessesTestPoolWorkerLifetime = _concrete(
    "WithProcessesTestPoolWorkerLifetime",
    cpython._TestPoolWorkerLifetime,
    _ProcessesMixin,
    _process_attrs("fork"),
)
WithThreadsTestPool = _concrete(
    "WithThreadsTestPool", cpython._TestPool, _ThreadsMixin, _thread_attrs()
)
WithProcessesTestQueue = _concrete(
    "WithProcessesTestQueue", cpython._TestQueue, _ProcessesMixin, _process_attrs("fork")
)
WithSpawnTestQueue = _concrete(
    "WithSpawnTestQueue", cpython._TestQueue, _ProcessesMixin, _process_attrs("spawn")
)
