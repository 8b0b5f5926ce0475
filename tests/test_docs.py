"""Docs that run: the python examples of the README and docs/, every docstring example, and
the demo, so the docs cannot drift from the code."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Modules whose docstrings carry examples (each must have at least one).
MODULES = [
    "shoal",
    "shoal.dummy",
    "shoal.dummy._queue",
    "shoal.pool",
    "shoal.pool._pool",
    "shoal.pool._single",
    "shoal.pool._maps",
    "shoal.pool._arguments",
    "shoal.pool._results",
    "shoal.pool._imap",
    "shoal.pool._futures",
    "shoal.pool._chunks",
    "shoal.pool._cpu",
    "shoal.backends",
    "shoal.backends.base",
    "shoal.backends.thread",
    "shoal.dummy._pool",
    "shoal._wire.buffers",
    "shoal.backends.process",
    "shoal._wire.namespaces",
    "shoal._mp.queues",
    "shoal._mp.locks",
    "shoal._mp.context",
    "shoal._mp.joinable",
    "shoal._mp.conditions",
    "shoal._mp.sharedctypes",
    "shoal.errors",
    "shoal._stdlib_errors",
    "shoal.backends._sendable",
    "shoal._process.preload",
    "shoal.backends._cluster.remote",
    "shoal.backends._cluster.ray_session",
    "shoal._wire.shared",
    "shoal.backends._cluster.shipping",
    "shoal.backends._function_table",
    "shoal.pool._executor",
    "shoal.pool._aio",
    "shoal.joblib",
    "shoal._cli.info",
    "shoal.pool._progress",
    "shoal._current_worker",
    "shoal.backends._lives",
    "shoal._wire.labels",
    "shoal.pool._stats_text",
    "shoal._wire.culprit",
    "shoal._mp.mirror",
    "shoal.backends._restarts",
    "shoal._mp.process",
    "shoal._mp.managers",
]
# Modules checked even though they may hold no example of their own: internals whose
# behaviour the tests drive through the public API.
OPTIONAL = [
    "shoal._wire.pickling",
    "shoal.pool._stats",
    "shoal.pool._core",
    "shoal.pool._jobs",
    "shoal._process",
    "shoal._mp",
    "shoal._wire",
    "shoal._cli",
    "shoal.backends._cluster",
    # multiprocessing's submodules under shoal's name: their examples are multiprocessing's.
    "shoal.connection",
    "shoal.context",
    "shoal.forkserver",
    "shoal.heap",
    "shoal.managers",
    "shoal.process",
    "shoal.queues",
    "shoal.reduction",
    "shoal.resource_sharer",
    "shoal.resource_tracker",
    "shoal.shared_memory",
    "shoal.sharedctypes",
    "shoal.spawn",
    "shoal.synchronize",
    "shoal.util",
    "shoal.dummy.connection",
    "shoal._process.handover",
    "shoal._process.identity",
    "shoal._process.launch",
    "shoal._process.worker",
    "shoal._process.chunks",
    "shoal._process.zygote",
    "shoal._process.zygote_server",
    "shoal._process.child",
    "shoal._process.forking",
    "shoal.backends.dask",
    "shoal.backends._cluster.dask_session",
    "shoal.backends.ray",
]
# Modules whose docstrings are not run, and why.
NOT_RUN = {
    "shoal.__main__": "importing it runs the command line (test_info, test_demo_runs)",
    "shoal._cli.demo": "the demo itself; test_demo_runs runs it",
    "shoal._shoal": "the compiled engine: stubtest checks it against _shoal.pyi",
}


def run_python_blocks(doc: Path, tmp_path: Path) -> list[str]:
    """Runs each python block of a markdown file as a script; returns what each printed."""
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert blocks, f"{doc.name} has no python example"
    outputs = []
    for i, block in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(block)
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    return outputs


def test_readme_example_runs(tmp_path: Path) -> None:
    outputs = run_python_blocks(ROOT / "README.md", tmp_path)
    assert any("[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out for out in outputs)
    on_each = [line for out in outputs for line in out.splitlines() if line.endswith(" 328350")]
    assert on_each == ["process 328350", "dask 328350", "ray 328350"]
    assert "[0, 1, 4, 9, 16] [1, 2]\n" in outputs
    assert "(256, [3, 2, 1], [0, 1, 2])\n" in outputs
    assert "[1, 2, 3, 4, 5]\n" in outputs
    assert "1000/1000 tasks\n" in outputs
    assert "[0, 10, 20, 30]\n" in outputs
    assert "40 40 7\n[0, 1] 40\n" in outputs
    words = "[('and', 1), ('bird', 1), ('cat', 1), ('dog', 1), ('saw', 1), ('the', 3)]\n"
    assert words in outputs


def test_the_backends_doc_examples_run(tmp_path: Path) -> None:
    outputs = run_python_blocks(ROOT / "docs" / "backends.md", tmp_path)
    assert "[1, 2, 3] [0, 1, 2]\n6 tasks done\n" in outputs[-1]


def test_the_protocol_stub_names_every_member_of_the_protocol() -> None:
    """docs/backends.md's stub of shoal.backends.base lists every field of the types a
    backend sees and every member of Backend, so that it cannot fall behind the code."""
    from shoal.backends import base

    stub = _first_block(ROOT / "docs" / "backends.md", "pyi")
    for cls in (
        base.WorkerSpec,
        base.WorkerExit,
        base.Chunk,
        base.ChunkResult,
        base.BackendStats,
        base.WorkerLife,
    ):
        assert f"class {cls.__name__}:" in stub, cls
        for field in dataclasses.fields(cls):
            assert f"    {field.name}: " in stub, f"{cls.__name__}.{field.name}"
    members = [n for n in vars(base.Backend) if not n.startswith("_")]
    assert len(members) >= 10
    for name in members:
        assert f"def {name}(" in stub, f"Backend.{name}"
    for name in ("run_chunk", "local_workers", "all_failed", "describe_arguments"):
        assert f"def {name}(" in stub, name


def _first_block(path: Path, language: str) -> str:
    text = path.read_text()
    start = text.index(f"```{language}\n") + len(language) + 4
    return text[start : text.index("```", start)]


def test_the_doors_doc_examples_run(tmp_path: Path) -> None:
    outputs = run_python_blocks(ROOT / "docs" / "doors.md", tmp_path)
    assert outputs[0].startswith("(<class 'shoal.errors.ShoalError'>,")
    assert outputs[0].rstrip().endswith("load")
    assert outputs[1] == "[0, 1, 4, 9]\n"


def _written_in(cls: type, module: ModuleType) -> bool:
    codes = (getattr(member, "__code__", None) for member in vars(cls).values())
    return any(code is not None and code.co_filename == module.__file__ for code in codes)


def _examples(module: ModuleType) -> list[doctest.DocTest]:
    """The module's doctests, and those of classes written in its file that present
    themselves as another module's (``shoal.Queue`` is declared in ``shoal._mp.queues``)."""
    finder = doctest.DocTestFinder()
    tests = finder.find(module)
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and value.__module__ != module.__name__
            and _written_in(value, module)
        ):
            tests += finder.find(value, value.__qualname__, module=False, globs=vars(module))
    return tests


@pytest.mark.parametrize("name", MODULES + OPTIONAL)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in _examples(module):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0
    assert attempted > 0 or name in OPTIONAL


def test_every_module_of_shoal_is_doc_tested_or_says_why_not() -> None:
    import pkgutil

    import shoal

    names = {"shoal"} | {m.name for m in pkgutil.walk_packages(shoal.__path__, "shoal.")}
    listed = set(MODULES) | set(OPTIONAL) | set(NOT_RUN)
    assert names - listed == set(), "add them to MODULES (or OPTIONAL) in tests/test_docs.py"
    assert listed - names == set(), "modules listed here that do not exist"


def test_demo_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "demo"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "primes" in done.stdout
    assert "msg/s" in done.stdout


def test_the_figures_the_readme_quotes_are_the_codes() -> None:
    from shoal._mp.conditions import NOTIFY_PATIENCE
    from shoal._mp.joinable import _FIRST_LOOK, _LOOK_CAP
    from shoal.backends._cluster.ray_session import CONNECT_TIMEOUT as RAY_CONNECT_TIMEOUT
    from shoal.backends.dask import CONNECT_TIMEOUT

    readme = " ".join((ROOT / "README.md").read_text().split())
    for quoted in (
        f"`notify` wait up to {NOTIFY_PATIENCE:g} s",
        f"every {_FIRST_LOOK * 1000:g} ms at first, backing off to {_LOOK_CAP * 1000:g} ms",
        f"unreachable one fails within {CONNECT_TIMEOUT:g} s",
        f"one where nothing answers fails within {RAY_CONNECT_TIMEOUT:g} s",
    ):
        assert quoted in readme


def test_the_chaos_the_readme_describes_is_what_chaos_py_does() -> None:
    import inspect

    import chaos
    from chaos_faults import Faults

    run = inspect.signature(chaos.run).parameters
    faults = inspect.signature(Faults).parameters
    low, high = faults["every"].default
    readme = " ".join((ROOT / "README.md").read_text().split())
    for quoted in (
        f"a pool of {run['workers'].default} workers",
        f"(`retries={run['retries'].default}`, `task_timeout={run['task_timeout'].default}`)",
        f"{chaos.ARRAY.nbytes / 1e6:g} MB arrays both ways",
        f"every {low * 1000:g}-{high * 1000:g} ms",
        f"one time in {1 / faults['stop_share'].default:g} `SIGSTOP`",
    ):
        assert quoted in readme, quoted


def _rust_constant(path: str, pattern: str) -> int:
    """A number from the engine's source (the figure is a Rust constant, not exported)."""
    found = re.search(pattern, (ROOT / path).read_text())
    assert found, f"{pattern} not in {path}"
    return int(found.group(1))


def test_the_figures_the_design_doc_quotes_are_the_codes() -> None:
    from shoal._wire.labels import PROGRESS_EVERY
    from shoal.backends.process import _DEPTH, _IN_FLIGHT_PER_WORKER
    from shoal.pool._chunks import MAX_ADAPTIVE
    from shoal.pool._progress import PROGRESS_STEPS

    spin = _rust_constant(
        "crates/shoal-engine/src/wait.rs", r"const SPIN: Duration = Duration::from_micros\((\d+)\)"
    )
    deepest = _rust_constant("crates/shoal-engine/src/depth.rs", r"const MAX_DEPTH: usize = (\d+);")
    design = " ".join((ROOT / "docs" / "design.md").read_text().split())
    shift = _IN_FLIGHT_PER_WORKER.bit_length() - 1
    assert 1 << shift == _IN_FLIGHT_PER_WORKER
    for quoted in (
        f"A waiter spins for {spin} us",
        f"({_DEPTH} to {deepest} owed per worker;",
        f"two for slow chunks, so that none is stranded behind a busy worker, up to {deepest}",
        f"The Pool may keep 1 << {shift} chunks per worker in flight",
    ):
        assert quoted in design, quoted
    assert _DEPTH == 2  # the design doc says "two for slow chunks"
    from shoal._wire.labels import LABEL_AFTER
    from shoal.pool._stats import SLOWEST

    assert f"every {PROGRESS_EVERY} s while a chunk a bar" in design
    assert f"the {['one', 'two', 'three', 'four', 'five'][SLOWEST - 1]} slowest" in design
    assert f"only when the chunk ran {LABEL_AFTER * 1000:.0f} ms or" in design
    patience = _rust_constant(
        "crates/shoal-engine/src/arena/mod.rs",
        r"LOCK_PATIENCE: Duration = Duration::from_secs\((\d+)\)",
    )
    assert f"it waits at most {patience} s (`LOCK_PATIENCE`)" in design
    slice_ms = _rust_constant(
        "crates/shoal-engine/src/wait.rs",
        r"pub const SLICE: Duration = Duration::from_millis\((\d+)\)",
    )
    first_check = _rust_constant(
        "crates/shoal-engine/src/sync.rs",
        r"pub const FIRST_OWNER_CHECK: Duration = Duration::from_millis\((\d+)\)",
    )
    assert f"sleeps in slices of at most {slice_ms} ms" in design
    assert f"on the doorbell in slices of at most {slice_ms} ms (`SLICE`)" in design
    assert f"after {first_check} ms (`FIRST_OWNER_CHECK`) and then every `SLICE`" in design
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"cuts its work into at least {PROGRESS_STEPS} chunks" in readme
    assert f"notices within about {slice_ms} ms that the holder is gone" in readme
    assert f"are done every {PROGRESS_EVERY} s" in readme
    backends = " ".join((ROOT / "docs" / "backends.md").read_text().split())
    assert f"at most doubling per step, at most {MAX_ADAPTIVE}" in backends
    assert f"process: 1 << {shift} per worker" in backends


# Paths the tree's text may name that are not in the tree, and why.
_NAMED_ELSEWHERE = {
    "target/": "cargo's build directory, made by the build",
    "test_parallel.py": "joblib's own test file, run from the installed joblib",
}
_PATH_IN_BACKTICKS = re.compile(
    r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*(?:\.(?:rs|py|pyi|md|toml|yml|yaml)|/))`"
)
# Where a relative path in the text may start from.
_PATH_BASES = (
    "",
    "python/",
    "python/shoal/",
    "crates/",
    "crates/shoal-engine/",
    "crates/shoal-engine/src/",
    "crates/shoal-python/src/",
    "tests/",
    "benches/",
)


def test_every_file_the_text_names_exists() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing lists the tree's files")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    names = {Path(f).name for f in tracked}
    folders = {f"{parent}/" for f in tracked for parent in Path(f).parents if parent.name}

    def exists(token: str) -> bool:
        if token.endswith("/"):
            return any(base + token in folders for base in _PATH_BASES)
        if "/" in token:
            return any(base + token in tracked for base in _PATH_BASES)
        return token in names

    stale: dict[str, set[str]] = {}
    for name in tracked:
        if not name.endswith((".md", ".rs", ".py", ".pyi", ".toml")):
            continue
        for found in _PATH_IN_BACKTICKS.finditer((ROOT / name).read_text()):
            token = found.group(1)
            if token not in _NAMED_ELSEWHERE and not exists(token):
                stale.setdefault(token, set()).add(name)
    assert stale == {}, "the text names files that are not in the tree"
    assert len(names) > 100  # the listing worked


_BROKE = "## Python 3.14 broke my script"


def test_the_python_314_programs_run_on_shoal_and_fail_on_multiprocessing(
    tmp_path: Path,
) -> None:
    """The README's three programs that 3.14's forkserver default broke: each runs on
    shoal with its printed result, on every Python (other_pythons.py runs this on 3.14 and
    3.15); from 3.14 on, with the import put back, multiprocessing fails each (or hangs:
    given 30 s)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(_BROKE) : text.index("\n## ", text.index(_BROKE) + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    expected = [
        "[0, 1, 4, 9]",
        "[0, 10, 20, 30, 40]",
        "[('fork', 4), ('forkserver', 10), ('spawn', 5)]",
    ]
    assert len(blocks) == len(expected)
    for i, (block, printed) in enumerate(zip(blocks, expected, strict=True)):
        script = tmp_path / f"broke_{i}.py"
        script.write_text(block)
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert (done.returncode, done.stdout.strip()) == (0, printed), done.stderr
        if sys.version_info < (3, 14):
            continue
        script.write_text(
            block.replace("import shoal as multiprocessing", "import multiprocessing")
        )
        try:
            theirs = subprocess.run(
                [sys.executable, str(script)],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=tmp_path,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            continue  # it hung (what subprocess.run started is killed)
        assert theirs.returncode != 0 or theirs.stdout.strip() != printed, block
