"""The package's surface: every public name resolves, and ``import shoal`` stays light
(names load on first use; the process pool's zygote starts only with the Pool); and the
house's: every make target says what it does, every benchmark has one, and no locked
crate needs a newer Rust than the declared ``rust-version``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import shoal


def test_every_public_name_resolves() -> None:
    assert shoal.__all__ == sorted(shoal._HOMES)
    for name in shoal.__all__:
        assert getattr(shoal, name) is not None
    assert set(shoal.__all__) <= set(dir(shoal))


def test_the_type_checkers_see_the_names_of_the_one_table() -> None:
    """shoal/__init__.py's TYPE_CHECKING imports (what type checkers read, since the names
    load lazily) are exactly its table of public names, each from its home."""
    tree = ast.parse(Path(shoal.__file__).read_text())
    guarded = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    seen = {}
    for node in guarded.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            assert alias.asname == alias.name, "re-exported as `X as X`"
            seen[alias.name] = node.module
    assert seen == shoal._HOMES


def printed_by(code: str) -> list[str]:
    """The lines a fresh interpreter running ``code`` printed (what it imported is its own)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.splitlines()


def test_import_shoal_loads_neither_the_pool_nor_pickling() -> None:
    code = (
        "import sys, shoal; "
        "print(sorted(m for m in ('shoal.pool', 'cloudpickle', 'multiprocessing') "
        "if m in sys.modules))"
    )
    assert printed_by(code) == ["[]"]


def test_only_looking_up_the_pool_boots_the_zygote() -> None:
    code = (
        "import sys, shoal, shoal.dummy; shoal.cpu_count(); "
        "import shoal._process.zygote as z; print(z._shared is None); "
        "shoal.Pool; print(z._shared is None)"
    )
    assert printed_by(code) == ["True", "False"]


def test_the_zygote_starts_before_the_workers_modules_load() -> None:
    # Looking up shoal.Pool prepares the process backend: its zygote boots while the
    # program loads the Pool, so nothing slow may come before it starts.
    code = (
        "import sys, shoal.backends as b; b.prepare('process'); "
        "import shoal._process.zygote as z; print(z._shared is None); "
        "print(sorted(m for m in ('shoal.backends.base', 'shoal._process.worker', 'cloudpickle',"
        " 'concurrent.futures') if m in sys.modules))"
    )
    assert printed_by(code) == ["False", "[]"]


def test_a_worker_loads_no_executor_and_no_multiprocessing_pool() -> None:
    # shoal.errors' InitializerError and ResultNotSentError come with them, on first use.
    code = (
        "import sys; from shoal._process import child, worker; import shoal.errors; "
        "print(sorted(m for m in ('concurrent.futures.process', 'multiprocessing.pool')"
        " if m in sys.modules))"
    )
    assert printed_by(code) == ["[]"]


def test_a_backend_option_the_backend_does_not_take_is_a_type_error() -> None:
    import pytest

    with pytest.raises(TypeError, match="the thread backend takes no option 'start_method'"):
        shoal.Pool(1, backend="thread", start_method="spawn")
    with pytest.raises(TypeError, match="'start_method', 'arena_bytes'"):
        shoal.Pool(1, start_methd="spawn")


def test_every_benchmark_has_a_make_target_and_every_target_a_help_line() -> None:
    root = Path(__file__).resolve().parent.parent
    makefile = (root / "Makefile").read_text()
    targets = re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE)
    helped = re.findall(r"^([a-z][a-z-]*):.*## ", makefile, flags=re.MULTILINE)
    assert targets == helped, set(targets) - set(helped)
    declared = re.search(r"\.PHONY:(.*?)\n\n", makefile, flags=re.DOTALL)
    assert declared is not None
    phony = set(declared.group(1).replace("\\", " ").split())
    assert set(targets) <= phony, set(targets) - phony
    for bench in sorted((root / "benches").glob("*_bench.py")):
        target = "bench-" + bench.stem.removesuffix("_bench")
        assert f"{target}:" in makefile, target
        assert f"benches/{bench.name}" in makefile, bench.name


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_every_locked_crate_builds_on_the_declared_rust_version() -> None:
    import json
    import shutil
    import tomllib

    if shutil.which("cargo") is None or shutil.which("rustc") is None:
        pytest.skip("no Rust toolchain here: the lock cannot be resolved")

    root = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["package"][
        "rust-version"
    ]
    host = subprocess.run(
        ["rustc", "-vV"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    triple = re.search(r"^host: (\S+)$", host, re.MULTILINE)
    assert triple is not None, host
    metadata = subprocess.run(
        [
            *("cargo", "metadata", "--format-version", "1", "--locked"),
            *("--filter-platform", triple.group(1)),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    packages = json.loads(metadata)["packages"]
    assert {p["name"] for p in packages} >= {"pyo3", "libc", "proptest"}
    too_new = {
        f"{p['name']} {p['version']}": p["rust_version"]
        for p in packages
        if p["rust_version"] and _version(p["rust_version"]) > _version(declared)
    }
    assert too_new == {}, f"these need a newer Rust than the declared {declared}"
