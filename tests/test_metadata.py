"""pyproject.toml says what packaging expects of a project today: the licence as a PEP 639
SPDX expression with its files, the Pythons it runs on, where it lives, and a build
backend that writes all of that into the wheel (tests/test_wheel.py reads it back from
the built wheel and sdist)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_licence_is_an_spdx_expression_with_its_files() -> None:
    project = _pyproject()["project"]
    assert project["license"] == "MIT OR Apache-2.0"
    assert project["license-files"] == ["LICENSE-MIT", "LICENSE-APACHE"]
    mit = (ROOT / "LICENSE-MIT").read_text()
    assert "Copyright (c) the shoal developers" in mit
    assert "Permission is hereby granted, free of charge" in mit
    apache = (ROOT / "LICENSE-APACHE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in apache
    assert "END OF TERMS AND CONDITIONS" in apache
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]
    assert workspace["license"] == project["license"]
    # PEP 639: a licence expression and License :: classifiers exclude each other.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


def test_the_build_backend_writes_pep_639_metadata() -> None:
    # maturin 1.9.0 began PEP 639; 1.9.2 writes License-Expression (not License) and
    # 1.9.3 puts the licence files into the sdist too.
    assert _pyproject()["build-system"]["requires"] == ["maturin>=1.9.3,<2"]


def test_the_classifiers_name_every_python_from_the_lowest_one_required() -> None:
    project = _pyproject()["project"]
    lowest = re.fullmatch(r">=3\.(\d+)", project["requires-python"])
    assert lowest is not None
    minors = [
        int(c.rsplit(".", 1)[1])
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert minors == list(range(int(lowest.group(1)), 16)), "3.11 to 3.15"
    assert "Programming Language :: Python :: 3 :: Only" in project["classifiers"]
    # The extension is built for the stable ABI of that same lowest Python.
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    features = cargo["workspace"]["dependencies"]["pyo3"]["features"]
    assert f"abi3-py3{lowest.group(1)}" in features


def test_the_project_says_where_it_lives_and_what_it_is_about() -> None:
    project = _pyproject()["project"]
    urls = project["urls"]
    assert sorted(urls) == ["Documentation", "Homepage", "Issues", "Source"]
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]
    assert urls["Source"] == urls["Homepage"] == workspace["repository"]
    assert all(url.startswith(workspace["repository"]) for url in urls.values())
    assert "multiprocessing" in project["keywords"]
    for classifier in ("Typing :: Typed", "Operating System :: POSIX :: Linux"):
        assert classifier in project["classifiers"]


def test_the_wheel_tools_are_the_projects_own() -> None:
    group = _pyproject()["dependency-groups"]["wheel"]
    assert {re.split(r"[<>=!~ ]", r)[0] for r in group} == {"maturin", "ziglang", "auditwheel"}
    makefile = (ROOT / "Makefile").read_text()
    assert "--group wheel" in makefile
    assert re.search(r"^WHEEL_TAG \?= manylinux_2_28$", makefile, re.MULTILINE)
