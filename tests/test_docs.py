"""Docs that run: the python examples of the README and of every page of docs/ (with the
output each page shows), every docstring example, the demo, the figures the pages quote
and the files they name, so the docs cannot drift from the code."""

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
    "shoal.pool._drop_in_executors",
    "shoal.backends._records",
    "shoal.backends._run_chunk",
    "shoal.backends._in_flight",
    "shoal.backends._process_exits",
    "shoal.backends._process_options",
    "shoal.backends._process_roster",
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
    "shoal._wire.calls",
    "shoal._wire.failure",
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
    "shoal._process.messages",
    "shoal._process.zygote",
    "shoal._process.zygote_server",
    "shoal._process.child",
    "shoal._process.forking",
    "shoal.backends.dask",
    "shoal.backends._cluster.dask_session",
    "shoal.backends._cluster.dask_worker",
    "shoal.backends.ray",
]
# Modules whose docstrings are not run, and why.
NOT_RUN = {
    "shoal.__main__": "importing it runs the command line (test_info, test_demo_runs)",
    "shoal._cli.demo": "the demo itself; test_demo_runs runs it",
    "shoal._shoal": "the compiled engine: stubtest checks it against _shoal.pyi",
}


# The pages whose examples run: the README and every page of the docs site.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", flags=re.DOTALL | re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Example:
    """A python block of a page, and the output the page shows under it (a ``text`` block
    right after it), if any; ``...`` in that output stands for any text."""

    code: str
    shown: str | None


def examples(page: Path) -> list[Example]:
    """The python examples of a markdown page, in order."""
    text = page.read_text()
    fences = list(_FENCE.finditer(text))
    found = []
    for i, block in enumerate(fences):
        if block.group(1) != "python":
            continue
        after = fences[i + 1] if i + 1 < len(fences) else None
        paired = (
            after is not None
            and after.group(1) == "text"
            and not text[block.end() : after.start()].strip()
        )
        found.append(Example(block.group(2), after.group(2) if paired and after else None))
    return found


def run_example(example: Example, script: Path) -> str:
    """Runs the example as a script (its functions in ``__main__``, as users write them)
    and returns what it printed; fails the test if it failed or printed other than shown."""
    script.write_text(example.code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{script.name} failed:\n{example.code}\n{done.stderr}"
    if example.shown is not None:
        checker = doctest.OutputChecker()
        assert checker.check_output(example.shown, done.stdout, doctest.ELLIPSIS), (
            f"{script.name} printed\n{done.stdout}\nwhere the page shows\n{example.shown}"
        )
    return done.stdout


# Pages of prose, figures and tables only.
_WITHOUT_EXAMPLES = {"api.md", "design.md", "developing.md", "limits.md", "performance.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_doc_examples_run_and_print_what_the_page_shows(page: Path, tmp_path: Path) -> None:
    found = examples(page)
    if page.name in _WITHOUT_EXAMPLES:
        assert found == [], "a python block here would run: give it a page that runs it"
        return
    assert found, f"{page.name} has no python example"
    assert any(example.shown is not None for example in found), "show what one prints"
    for i, example in enumerate(found):
        run_example(example, tmp_path / f"{page.stem}_{i}.py")


def test_examples_are_found_with_their_output() -> None:
    """The page reader itself: a python block followed by a text block is paired with it,
    and only then."""
    page = "```python\nprint(1)\n```\n\n```text\n1\n```\n\nwords\n\n```python\nx = 2\n```\n"
    page += "\nbetween\n\n```text\nnot its output\n```\n"
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "page.md"
        path.write_text(page)
        assert examples(path) == [Example("print(1)\n", "1\n"), Example("x = 2\n", None)]
        wrong = Example("print(2)\n", "1\n")
        with pytest.raises(AssertionError, match="where the page shows"):
            run_example(wrong, Path(folder) / "wrong.py")


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


def test_the_api_reference_covers_every_public_name() -> None:
    """docs/api.md documents each of shoal's public names from its docstring, or lists it
    as multiprocessing's (or the standard library's) own."""
    import shoal

    api = (ROOT / "docs" / "api.md").read_text()
    documented = set(
        re.findall(r"^\.\. auto(?:class|function|exception):: shoal\.(\w+)$", api, re.M)
    )
    listed = set(re.findall(r"^\| `shoal\.(\w+)` \|", api, re.M))
    assert documented & listed == set(), "each name once"
    assert documented | listed == set(shoal.__all__)
    for name in listed:
        home = shoal._HOMES[name]
        assert not home.startswith("shoal") or name in ("RemoteTraceback", "TimeoutError"), name


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


def _page(name: str) -> str:
    """A docs page's text with its line breaks and runs of spaces made single spaces."""
    return " ".join((ROOT / "docs" / name).read_text().split())


def test_the_figures_the_pages_quote_are_the_codes() -> None:
    from shoal._mp.conditions import NOTIFY_PATIENCE
    from shoal._mp.joinable import _FIRST_LOOK, _LOOK_CAP
    from shoal.backends._cluster.ray_session import CONNECT_TIMEOUT as RAY_CONNECT_TIMEOUT
    from shoal.backends.dask import CONNECT_TIMEOUT

    differs = _page("multiprocessing.md")
    assert f"`notify` wait up to {NOTIFY_PATIENCE:g} s" in differs
    assert f"every {_FIRST_LOOK * 1000:g} ms at first, backing off to {_LOOK_CAP * 1000:g} ms" in (
        differs
    )
    clusters = _page("clusters.md")
    assert f"unreachable one fails within {CONNECT_TIMEOUT:g} s" in clusters
    assert f"one where nothing answers fails within {RAY_CONNECT_TIMEOUT:g} s" in clusters


def test_the_front_page_quotes_the_performance_page() -> None:
    """The README's queue figure is the range of the put/get ratios the performance page's
    queue table measured."""
    table = (ROOT / "docs" / "performance.md").read_text()
    ratios = [
        float(row.split("|")[5].strip().rstrip("x"))
        for row in table.splitlines()
        if row.startswith("| ints, put/get,")
    ]
    assert len(ratios) == 2
    low, high = round(min(ratios)), round(max(ratios))
    quoted = f"{low}-{high}x" if low != high else f"{low}x"
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"{quoted} `multiprocessing.Queue` on small messages" in readme


def test_the_chaos_the_faults_page_describes_is_what_chaos_py_does() -> None:
    import inspect

    import chaos
    from chaos_faults import Faults

    run = inspect.signature(chaos.run).parameters
    faults = inspect.signature(Faults).parameters
    low, high = faults["every"].default
    page = _page("faults.md")
    for quoted in (
        f"a pool of {run['workers'].default} workers",
        f"(`retries={run['retries'].default}`, `task_timeout={run['task_timeout'].default}`)",
        f"{chaos.ARRAY.nbytes / 1e6:g} MB arrays both ways",
        f"every {low * 1000:g}-{high * 1000:g} ms",
        f"one time in {1 / faults['stop_share'].default:g} `SIGSTOP`",
    ):
        assert quoted in page, quoted


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
        "crates/shoal-engine/src/sync/mod.rs",
        r"pub const FIRST_OWNER_CHECK: Duration = Duration::from_millis\((\d+)\)",
    )
    assert f"sleeps in slices of at most {slice_ms} ms" in design
    assert f"on the doorbell in slices of at most {slice_ms} ms (`SLICE`)" in design
    assert f"after {first_check} ms (`FIRST_OWNER_CHECK`) and then every `SLICE`" in design
    progress = _page("progress.md")
    assert f"cuts its work into at least {PROGRESS_STEPS} chunks" in progress
    assert f"are done every {PROGRESS_EVERY} s" in progress
    assert f"notices within about {slice_ms} ms that the holder is gone" in _page(
        "multiprocessing.md"
    )
    backends = " ".join((ROOT / "docs" / "backends.md").read_text().split())
    assert f"at most doubling per step, at most {MAX_ADAPTIVE}" in backends
    assert f"process: 1 << {shift} per worker" in backends


# Paths the tree's text may name that are not in the tree, and why.
_NAMED_ELSEWHERE = {
    "target/": "the build's output (cargo's, the wheel's, the docs site's), made by the build",
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
            built = token.startswith("target/")
            if not built and token not in _NAMED_ELSEWHERE and not exists(token):
                stale.setdefault(token, set()).add(name)
    assert stale == {}, "the text names files that are not in the tree"
    assert len(names) > 100  # the listing worked


_BROKE = "## Python 3.14 broke my script"


def test_the_python_314_programs_run_on_shoal_and_fail_on_multiprocessing(
    tmp_path: Path,
) -> None:
    """The three programs that 3.14's forkserver default broke (docs/multiprocessing.md):
    each runs on shoal with its printed result, on every Python (other_pythons.py runs
    this on 3.14 and 3.15); from 3.14 on, with the import put back, multiprocessing fails
    each (or hangs: given 30 s)."""
    text = (ROOT / "docs" / "multiprocessing.md").read_text()
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
