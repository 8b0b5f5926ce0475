"""CPython's own multiprocessing tests, made concrete for shoal.

``test._test_multiprocessing`` holds abstract test classes (``_TestLock``, ``_TestPool``,
``_TestQueue``...) that read what they test from a mixin: ``self.Process``, ``self.Lock``,
``self.Pool``... CPython's ``test_multiprocessing_fork``/``_spawn``/``_forkserver``
combine each with ``ProcessesMixin``, ``ThreadsMixin`` or ``ManagerMixin``. Here every
class whose types include "processes" (``SHOAL_CLASSES``, as many as the running Python
has) is combined with a mixin whose objects are what ``import shoal as multiprocessing``
gives: shoal's Pool, queues, locks, conditions, values; multiprocessing's where shoal
takes multiprocessing's as it is. They run under this Python version's default start
method (``START_METHOD``), as a program that sets none does. Two more classes run
CPython's Queue tests under spawn and its Pool tests on ``shoal.dummy``.

Some CPython tests call ``multiprocessing.Pool`` or ``multiprocessing.Queue`` by name
rather than through the mixin (``_TestPoolWorkerErrors``, ``_TestQueue.test_timeout``...):
while a test of a process class runs, those names are pointed at shoal too, or those
tests would test multiprocessing.

This is an importable module, as a user's test module is: a child started by spawn or
forkserver imports it by name (``tests/`` on ``sys.path``) to find a test's worker
function. ``test_cpython_suite`` runs it in an interpreter of its own.

``EXPECTED_FAILURES`` names every test that fails against shoal on purpose, with why;
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
    "SHOAL_CLASSES",
    "START_METHOD",
    "WithSpawnTestQueue",
    "WithThreadsTestPool",
]

START_METHOD = multiprocessing.get_all_start_methods()[0]
"""The start method the shoal classes run under: this Python version's default (fork up to
3.13, forkserver from 3.14), as a program that sets none gets it."""

# (concrete class, test method): why it fails against shoal, on purpose. A test a Python
# version lacks is passed over.
_PUT_PICKLES = (
    "put() pickles at once and raises shoal.errors.PicklingError (there is no feeder "
    "thread to report the error and drop the object, as multiprocessing's does)"
)
_LAMBDA_RESULT = (
    "its unpicklable result is a lambda, which shoal sends back (cloudpickle); a result "
    "that cannot be pickled fails with ResultNotSentError, a MaybeEncodingError "
    "(test_pool_process.py)"
)
EXPECTED_FAILURES: dict[tuple[str, str], str] = {
    ("WithShoalTestPoolWorkerErrors", "test_unpickleable_result"): _LAMBDA_RESULT,
    ("WithShoalTestQueue", "test_queue_feeder_donot_stop_onexc"): _PUT_PICKLES,
    ("WithSpawnTestQueue", "test_queue_feeder_donot_stop_onexc"): _PUT_PICKLES,
}

# (concrete class, test method): why it cannot apply to shoal at all.
_FEEDER_HOOK = "subclasses multiprocessing.queues.Queue to test its feeder thread's hook"
_FORKSERVER = (
    "tests multiprocessing's fork server's authentication; a shoal.Process never uses "
    "the fork server (its child is forked by shoal's zygote)"
)
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("WithShoalTestProcess", "test_forkserver_without_auth_fails"): _FORKSERVER,
    ("WithShoalTestQueue", "test_queue_feeder_on_queue_feeder_error"): _FEEDER_HOOK,
    ("WithSpawnTestQueue", "test_queue_feeder_on_queue_feeder_error"): _FEEDER_HOOK,
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
    if "setUp" in attrs:
        # The harness's own set-up first, then the test class's (many have one).
        ours, theirs = attrs["setUp"], getattr(base, "setUp", unittest.TestCase.setUp)

        def set_up(self: unittest.TestCase) -> None:
            ours(self)
            theirs(self)

        namespace["setUp"] = set_up
    for test in _tests_of(base):
        reason = NOT_APPLICABLE.get((name, test))
        if reason is not None:
            namespace[test] = _marked(getattr(base, test), unittest.skip(reason))
            continue
        reason = EXPECTED_FAILURES.get((name, test))
        if reason is not None:
            namespace[test] = _marked(getattr(base, test), unittest.expectedFailure)
    cls = type(name, (base, mixin, unittest.TestCase), namespace)
    return cls


_ProcessesMixin: type = cpython.ProcessesMixin
_ThreadsMixin: type = cpython.ThreadsMixin

WithThreadsTestPool = _concrete(
    "WithThreadsTestPool", cpython._TestPool, _ThreadsMixin, _thread_attrs()
)
WithSpawnTestQueue = _concrete(
    "WithSpawnTestQueue", cpython._TestQueue, _ProcessesMixin, _process_attrs("spawn")
)


def _shoal_attrs() -> dict[str, Any]:
    """The mixin attributes of a process class as ``import shoal as multiprocessing``
    gives them: shoal's objects where it has its own (Pool, the queues, locks, values),
    multiprocessing's elsewhere (today Process, Pipe, current_process...)."""
    attrs: dict[str, Any] = {"setUp": _redirect_multiprocessing}
    for name, value in vars(cpython.ProcessesMixin).items():
        if name.startswith("_") or name == "TYPE":
            continue
        found = getattr(shoal, name)
        attrs[name] = staticmethod(found) if isinstance(value, staticmethod) else found
    return attrs


def _process_classes() -> dict[str, type]:
    """CPython's abstract test classes that run on processes, by name (each version has
    its own list)."""
    return {
        name: base
        for name, base in vars(cpython).items()
        if isinstance(base, type)
        and issubclass(base, cpython.BaseTestCase)
        and base is not cpython.BaseTestCase
        and "processes" in getattr(base, "ALLOWED_TYPES", ())
    }


SHOAL_CLASSES = [
    _concrete(
        f"WithShoal{name[1:]}",
        base,
        _ProcessesMixin,
        {**_shoal_attrs(), "start_method": START_METHOD},
    )
    for name, base in sorted(_process_classes().items())
    # (As CPython's own harness does: a class may be for some start methods only.)
    if START_METHOD in (getattr(base, "START_METHODS", None) or {START_METHOD})
]
"""Every CPython test class of the "processes" type, with shoal's objects in its mixin
and the start method the Python version defaults to."""
globals().update((cls.__name__, cls) for cls in SHOAL_CLASSES)
