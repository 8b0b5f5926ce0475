"""CPython's own ``concurrent.futures`` tests, run against shoal's two executors.

``test.test_concurrent_futures`` (a package from CPython 3.11.6 and 3.12 on; this module
needs an interpreter that ships it, 3.13 here) holds its generic cases as mixins:
``ExecutorTest``, ``WaitTests``, ``AsCompletedTests``, ``ExecutorShutdownTest``,
``InitializerMixin`` and ``FailingInitializerMixin``. CPython combines each with a mixin
that names the executor; here they are combined with one naming ``shoal.Executor`` on
processes and one naming ``shoal.ThreadPoolExecutor``, with CPython's own helper, so the
tests run exactly as CPython runs them. The mixins define no ``ctx``, so no
``mp_context`` is passed (``shoal.ProcessPoolExecutor`` takes one; ``shoal.Executor``
chooses its start method itself).

``NOT_APPLICABLE`` names the tests that cannot apply, with why; they are skipped.
Run as ``python3.13 -m unittest cf_suite`` from ``tests/`` (``test_cf_suite.py`` does,
and checks the outcome).
"""

from __future__ import annotations

import unittest
from typing import Any

# The stdlib's own test package ships no type information.
from test.test_concurrent_futures import util  # type: ignore[import-not-found]
from test.test_concurrent_futures.executor import ExecutorTest  # type: ignore[import-not-found]
from test.test_concurrent_futures.test_as_completed import (  # type: ignore[import-not-found]
    AsCompletedTests,
)
from test.test_concurrent_futures.test_init import (  # type: ignore[import-not-found]
    FailingInitializerMixin,
    InitializerMixin,
)
from test.test_concurrent_futures.test_shutdown import (  # type: ignore[import-not-found]
    ExecutorShutdownTest,
)
from test.test_concurrent_futures.test_wait import WaitTests  # type: ignore[import-not-found]

import shoal

_IMPORTS_STDLIB = (
    "runs `from concurrent.futures import <name>` in a fresh interpreter, which is the "
    "standard library's executor, not shoal's (test_executor.py runs the same scenario "
    "as a script on shoal)"
)
# test method: why it cannot apply to shoal.
NOT_APPLICABLE: dict[str, str] = {
    "test_interpreter_shutdown": _IMPORTS_STDLIB,
    "test_submit_after_interpreter_shutdown": _IMPORTS_STDLIB,
    "test_hang_gh83386": _IMPORTS_STDLIB,
}


class ShoalProcessMixin(util.ExecutorMixin):  # type: ignore[misc]
    """``shoal.Executor`` on the process backend (its default)."""

    executor_type = shoal.Executor


class ShoalThreadMixin(util.ExecutorMixin):  # type: ignore[misc]
    """``shoal.ThreadPoolExecutor``."""

    executor_type = shoal.ThreadPoolExecutor


def _skipping(mixin: type) -> type:
    """``mixin`` with its not-applicable tests skipped: a subclass, as the test mixin
    comes first in the classes CPython's helper builds."""
    skips: dict[str, Any] = {
        name: unittest.skip(reason)(getattr(mixin, name))
        for name, reason in NOT_APPLICABLE.items()
        if hasattr(mixin, name)
    }
    return type(mixin.__name__, (mixin,), skips)


for _tests in (
    ExecutorTest,
    WaitTests,
    AsCompletedTests,
    ExecutorShutdownTest,
    InitializerMixin,
    FailingInitializerMixin,
):
    util.create_executor_tests(
        globals(), _skipping(_tests), executor_mixins=(ShoalProcessMixin, ShoalThreadMixin)
    )


def setUpModule() -> None:
    util.setup_module()
