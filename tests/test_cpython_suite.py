"""CPython's multiprocessing tests for every "processes" object, run against shoal's
objects (``cpython_suite``) in an interpreter of their own: CPython's tests set start
methods, loggers and signal handlers as its own harness lets them, which a shared pytest
process should not inherit. At least 98% of them pass, and every one that does not is
named, with why, in the module's tables."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import programs
import pytest

HERE = Path(__file__).parent

_DRIVER = """
import json, sys, unittest

if __name__ == "__main__":  # (spawn and forkserver children import this file too)
    import multiprocessing
    import cpython_suite

    # As CPython's harness does for the suite of one start method.
    multiprocessing.set_start_method(cpython_suite.START_METHOD, force=True)
    outcomes = {}

    class Outcomes(unittest.TextTestResult):
        def addSuccess(self, test):
            super().addSuccess(test); outcomes[test.id()] = ["passed", ""]
        def addFailure(self, test, err):
            super().addFailure(test, err)
            outcomes[test.id()] = ["failed", self._exc_info_to_string(err, test)]
        def addError(self, test, err):
            super().addError(test, err)
            outcomes[test.id()] = ["error", self._exc_info_to_string(err, test)]
        def addSkip(self, test, reason):
            super().addSkip(test, reason); outcomes[test.id()] = ["skipped", reason]
        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err); outcomes[test.id()] = ["expected", ""]
        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test); outcomes[test.id()] = ["unexpected", ""]
        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                outcomes[subtest.id()] = ["failed", self._exc_info_to_string(err, test)]

    suite = unittest.TestSuite()
    for cls in [*cpython_suite.SHOAL_CLASSES, cpython_suite.WithSpawnTestQueue,
                cpython_suite.WithThreadsTestPool]:
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    unittest.TextTestRunner(resultclass=Outcomes, verbosity=0, stream=sys.stderr).run(suite)
    with open(sys.argv[1], "w") as out:
        json.dump({"outcomes": outcomes, "start_method": cpython_suite.START_METHOD}, out)
"""


@pytest.mark.timeout(900)
def test_cpythons_multiprocessing_tests_pass_on_shoals_objects(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    # A job of its own: whatever the tests leave running is killed with it.
    done = programs.run(
        [sys.executable, str(driver), str(report_file)], timeout=800, cwd=tmp_path, env=env
    )
    errors = done.stderr
    assert report_file.exists(), f"the harness gave no report; its errors:\n{errors[-5000:]}"
    report = json.loads(report_file.read_text())
    outcomes: dict[str, list[str]] = report["outcomes"]
    kinds = Counter(kind for kind, _ in outcomes.values())
    sys.stdout.write(f"{sys.version.split()[0]}, {report['start_method']}: {dict(kinds)}\n")
    failed = {t: text for t, (kind, text) in outcomes.items() if kind in ("failed", "error")}
    assert not failed, "\n\n".join(f"{test}\n{text}" for test, text in failed.items())
    assert kinds["unexpected"] == 0, "a test named in EXPECTED_FAILURES passes: take it off"
    ran = kinds["passed"] + kinds["expected"]
    assert kinds["passed"] / ran >= 0.98, kinds
    assert ran >= 140, kinds  # every "processes" class ran
