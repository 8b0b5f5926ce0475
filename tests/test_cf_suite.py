"""Runs CPython's ``concurrent.futures`` tests (``cf_suite.py``) against shoal's
executors, in a CPython that ships them (3.13 from pyenv here), and checks the outcome:
every generic case passes but the ones ``cf_suite.NOT_APPLICABLE`` skips with a reason.

shoal's extension is built for the stable ABI, so the same build loads in that
interpreter: the test copies the installed ``shoal`` package and ``cloudpickle`` (shoal's
one dependency, pure Python) into a folder of its own and puts it on that interpreter's
path, so nothing is installed into it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cloudpickle  # type: ignore[import-untyped]
import pytest

import shoal

HERE = Path(__file__).parent

_DRIVER = """
import json, sys, unittest
import cf_suite

class Outcomes(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}
    def addSuccess(self, test):
        super().addSuccess(test); self.outcomes[test.id()] = ["passed", ""]
    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[test.id()] = ["failed", self._exc_info_to_string(err, test)]
    def addError(self, test, err):
        super().addError(test, err)
        self.outcomes[test.id()] = ["error", self._exc_info_to_string(err, test)]
    def addSkip(self, test, reason):
        super().addSkip(test, reason); self.outcomes[test.id()] = ["skipped", reason]

suite = unittest.defaultTestLoader.loadTestsFromModule(cf_suite)
runner = unittest.TextTestRunner(resultclass=Outcomes, verbosity=0, stream=sys.stderr)
result = runner.run(suite)
report = {"outcomes": result.outcomes, "not_applicable": sorted(cf_suite.NOT_APPLICABLE)}
with open(sys.argv[1], "w") as out:
    json.dump(report, out)
"""


def _python_with_the_package() -> str | None:
    """A CPython on this machine whose ``test.test_concurrent_futures`` is there."""
    candidates = [shutil.which(f"python3.{minor}") for minor in (13, 14, 12)]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{root}/versions/3.1[234]*/bin/python3"), reverse=True)
    for python in filter(None, candidates):
        probe = subprocess.run(
            [python, "-c", "import test.test_concurrent_futures.util"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return python
    return None


def test_cpythons_concurrent_futures_tests_pass_on_shoals_executors(tmp_path: Path) -> None:
    python = _python_with_the_package()
    if python is None:
        pytest.skip(
            "no CPython here ships test.test_concurrent_futures (3.12 or 3.13 with its "
            "test package); the harness needs one"
        )
    for package in (shoal, cloudpickle):
        shutil.copytree(
            Path(str(package.__file__)).parent,
            tmp_path / package.__name__,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{HERE}"}
    report_file = tmp_path / "report.json"
    run = subprocess.run(
        [python, "-c", _DRIVER, str(report_file)],
        capture_output=True,
        text=True,
        cwd=HERE,
        env=env,
        timeout=600,
        check=False,
    )
    assert report_file.exists(), f"the harness gave no report; its errors:\n{run.stderr}"
    report = json.loads(report_file.read_text())
    outcomes: dict[str, list[str]] = report["outcomes"]
    sys.stdout.write(f"{python}: {Counter(kind for kind, _ in outcomes.values())}\n")
    failed = {test: text for test, (kind, text) in outcomes.items() if kind in ("failed", "error")}
    assert not failed, "\n\n".join(f"{test}\n{text}" for test, text in failed.items())
    skipped = {test.rsplit(".", 1)[1] for test, (kind, _) in outcomes.items() if kind == "skipped"}
    assert skipped <= set(report["not_applicable"]), f"skipped without a reason: {skipped}"
    # Each executor runs every generic case.
    for executor in ("ShoalProcess", "ShoalThread"):
        ran = [test for test in outcomes if f".{executor}" in test]
        assert len(ran) >= 30, (executor, len(ran))
