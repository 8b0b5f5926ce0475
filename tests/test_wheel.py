"""What a user gets from ``pip install shoal``: the manylinux wheel works in a fresh
virtual environment on a machine without Rust, and the sdist carries everything a build
needs (Cargo.lock included) and builds in one.

Building them takes minutes, so the plain ``pytest`` run skips this module: ``make
test-wheel`` (part of ``make test``) builds the wheel (``make wheel``) and the sdist (``make
sdist``) and runs it with their paths in SHOAL_WHEEL and SHOAL_SDIST."""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEEL = os.environ.get("SHOAL_WHEEL")
SDIST = os.environ.get("SHOAL_SDIST")

pytestmark = pytest.mark.skipif(
    WHEEL is None or SDIST is None,
    reason="builds a wheel and an sdist first: run by `make test-wheel` (SHOAL_WHEEL and "
    "SHOAL_SDIST name them)",
)

# What the Rust toolchain and an outer environment could lend an install.
LEFT_OUT = {"PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "VIRTUAL_ENV", "CARGO_TARGET_DIR"}
LEFT_OUT_PREFIXES = ("CARGO_", "RUSTUP_", "RUSTC", "MATURIN_", "PYO3_")

SMOKE = """\
import multiprocessing
import os

import shoal


def echo(inbox, outbox):
    outbox.put((os.getpid(), inbox.get(timeout=60)))


if __name__ == "__main__":
    with shoal.Pool(2) as pool:
        assert pool.map(lambda x: x * x, range(20)) == [x * x for x in range(20)]
        worker = pool.apply(os.getpid)
    assert worker != os.getpid(), "the pool's task ran in this process"

    inbox, outbox = shoal.Queue(), shoal.Queue()
    other = multiprocessing.get_context("spawn").Process(target=echo, args=(inbox, outbox))
    other.start()
    inbox.put({"n": [1, 2, 3], "b": b"bytes"})
    pid, got = outbox.get(timeout=60)
    other.join(60)
    assert got == {"n": [1, 2, 3], "b": b"bytes"}, got
    assert pid == other.pid != os.getpid() and other.exitcode == 0, (pid, other.exitcode)
    print("smoke ok")
"""


def _metadata(text: str) -> tuple[str, list[str], list[str]]:
    """A METADATA/PKG-INFO file's version, License-Expression and License-File lines."""
    fields = email.parser.HeaderParser().parsestr(text)
    expression = fields.get_all("License-Expression") or []
    return fields["Metadata-Version"], expression, sorted(fields.get_all("License-File") or [])


def _check_licence_metadata(text: str) -> None:
    assert _metadata(text) == ("2.4", ["MIT OR Apache-2.0"], ["LICENSE-APACHE", "LICENSE-MIT"])
    assert "\nLicense:" not in text
    assert "Classifier: License ::" not in text


def _without_rust() -> dict[str, str]:
    """This environment with no Rust toolchain on PATH and nothing that points Python or
    a build elsewhere."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in LEFT_OUT and not name.startswith(LEFT_OUT_PREFIXES)
    }
    env["PATH"] = os.pathsep.join(
        folder
        for folder in os.environ.get("PATH", "").split(os.pathsep)
        if folder and not any(shutil.which(tool, path=folder) for tool in ("cargo", "rustc"))
    )
    return env


def _venv(where: Path, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A fresh virtual environment at ``where``: its interpreter, and ``env`` with its
    ``bin`` first on PATH."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    env = {**env, "PATH": f"{where / 'bin'}{os.pathsep}{env['PATH']}"}
    return where / "bin" / "python", env


def _pip(python: Path, env: dict[str, str], *arguments: str, timeout: float = 300) -> None:
    """The venv's pip, run beside the venv (away from the source tree)."""
    subprocess.run(
        [str(python), "-m", "pip", *arguments, "-q", "--disable-pip-version-check"],
        cwd=python.parent.parent.parent,
        env=env,
        check=True,
        timeout=timeout,
    )


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The wheel installed (from the wheel alone, nothing built) in a fresh virtual
    environment; runs its python in an empty folder with no Rust on PATH."""
    assert WHEEL is not None
    env = _without_rust()
    for tool in ("cargo", "rustc"):
        assert shutil.which(tool, path=env["PATH"]) is None, tool
    python, env = _venv(tmp_path_factory.mktemp("wheel") / "venv", env)
    _pip(python, env, "install", "--only-binary", ":all:", WHEEL)
    elsewhere = tmp_path_factory.mktemp("elsewhere")

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, *arguments],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


@pytest.mark.timeout(600)
def test_the_wheel_installs_and_imports_from_the_venv_without_rust(installed: Run) -> None:
    done = installed(
        "-c",
        "import shutil, sys, shoal, shoal._shoal; "
        "print(sys.prefix, shoal.__file__, shoal._shoal.__file__, "
        "shutil.which('cargo'), shutil.which('rustc'), sep='\\n')",
    )
    assert done.returncode == 0, done.stderr
    prefix, package, extension, cargo, rustc = done.stdout.split("\n")[:5]
    assert package.startswith(prefix), done.stdout
    assert extension.startswith(prefix), done.stdout
    assert not package.startswith(str(ROOT)), "imported the source tree's shoal"
    assert extension.endswith(".abi3.so"), extension
    assert (cargo, rustc) == ("None", "None")


@pytest.mark.timeout(600)
def test_the_demo_runs_from_the_wheel(installed: Run) -> None:
    done = installed("-m", "shoal", "demo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "primes" in done.stdout, done.stdout


@pytest.mark.timeout(600)
def test_a_pool_and_a_queue_work_across_processes_from_the_wheel(
    installed: Run, tmp_path: Path
) -> None:
    script = tmp_path / "smoke.py"
    script.write_text(SMOKE)
    done = installed(str(script))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "smoke ok", done.stdout + done.stderr


def test_the_wheel_says_its_licence_as_pep_639_asks() -> None:
    assert WHEEL is not None
    with zipfile.ZipFile(WHEEL) as wheel:
        names = wheel.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        _check_licence_metadata(wheel.read(info).decode())
        folder = info.removesuffix("METADATA")
        assert {f"{folder}licenses/LICENSE-MIT", f"{folder}licenses/LICENSE-APACHE"} <= set(names)
        assert "shoal/py.typed" in names


def _sources() -> set[str]:
    """The files of the tree a build reads: the workspace's manifests, its lock, every
    Rust file of the crates and every file of the Python package but the built
    extension."""
    found = {"Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md"}
    found |= {"LICENSE-MIT", "LICENSE-APACHE"}
    for path in (ROOT / "crates").rglob("*"):
        if path.suffix in {".rs", ".toml"} and "target" not in path.parts:
            found.add(path.relative_to(ROOT).as_posix())
    for path in (ROOT / "python" / "shoal").rglob("*"):
        if path.is_file() and path.suffix in {".py", ".pyi", ".typed"}:
            found.add(path.relative_to(ROOT).as_posix())
    return found


@pytest.mark.timeout(1200)
def test_the_sdist_carries_the_lock_and_builds_in_a_fresh_venv(tmp_path: Path) -> None:
    assert SDIST is not None
    with tarfile.open(SDIST) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        carried = {n.removeprefix(f"{top}/") for n in sdist.getnames()}
        lock = sdist.extractfile(f"{top}/Cargo.lock")
        info = sdist.extractfile(f"{top}/PKG-INFO")
        assert lock is not None
        assert info is not None
        assert lock.read() == (ROOT / "Cargo.lock").read_bytes()
        _check_licence_metadata(info.read().decode())
    assert _sources() - carried == set()
    assert not any(n.endswith(".so") for n in carried)

    # pip builds it the way it would for a user: maturin from PyPI in an isolated build
    # environment, cargo from PATH; --locked makes the build fail if the lock were stale.
    env = {name: value for name, value in os.environ.items() if name not in LEFT_OUT}
    env["MATURIN_PEP517_ARGS"] = "--locked"
    python, env = _venv(tmp_path / "venv", env)
    built = tmp_path / "built"
    _pip(python, env, "wheel", "--no-deps", "--wheel-dir", str(built), SDIST, timeout=1100)
    (wheel,) = built.glob("shoal-*.whl")
    assert "-cp311-abi3-" in wheel.name, wheel.name
    _pip(python, env, "install", "--no-deps", str(wheel))
    loaded = subprocess.run(
        [python, "-c", "import shoal._shoal as s; print(s.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert loaded.stdout.startswith(str(tmp_path / "venv")), loaded.stdout
