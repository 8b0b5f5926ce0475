"""shoal in a real Jupyter kernel (ipykernel, run through nbclient): the notebook shows
exactly what the program prints, its workers' prints included, and nothing that shoal
does on its own (starting the zygote, preloading the kernel's modules, debugpy among
them) prints anything."""

from __future__ import annotations

from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

# Each cell, and what it prints (stdout lines) or shows (its value).
CELLS: list[tuple[str, list[str], str | None]] = [
    ("import shoal", [], None),
    (
        "def shout(x):\n"
        "    print('task', x, flush=True)\n"
        "    return -x\n"
        "\n"
        "with shoal.Pool(1) as pool:\n"
        "    print(pool.map(shout, [1, 2]))",
        ["task 1", "task 2", "[-1, -2]"],
        None,
    ),
    ("scale = 10\nshoal.map(lambda x: x * scale, [1, 2], processes=2)", [], "[10, 20]"),
    (
        "with shoal.Pool(2) as pool:\n    print(sorted(pool.map(abs, range(-3, 0))))",
        ["[1, 2, 3]"],
        None,
    ),
    # The kernel forwards what workers print (from their own descriptors) as it reads it:
    # a line may land in the next cell. This one gives late lines a place to land.
    ("import time; time.sleep(0.5)", [], None),
]


def _streams(cell: Any) -> list[tuple[str, str]]:
    """The cell's stream outputs, as (stream name, its text without line ends)."""
    found: list[tuple[str, str]] = []
    for output in cell["outputs"]:
        if output["output_type"] == "stream":
            found.append((output["name"], output["text"].replace("\n", "")))
    return found


def _value(cell: Any) -> str | None:
    results = [o for o in cell["outputs"] if o["output_type"] == "execute_result"]
    return results[0]["data"]["text/plain"] if results else None


@pytest.mark.timeout(180)
def test_the_notebook_shows_exactly_what_the_program_prints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ipykernel forwards what is written to its descriptors (the workers' prints) unless
    # it finds itself under pytest: the kernel is a user's, as far as it can tell.
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source, _, _ in CELLS]
    # (The client starts the kernel and shuts it down, pass or fail.)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    printed = ""
    for cell, (source, _, value) in zip(notebook.cells, CELLS, strict=True):
        assert _value(cell) == value, source
        assert {o["output_type"] for o in cell["outputs"]} <= {"stream", "execute_result"}
        streams = _streams(cell)
        assert {name for name, _ in streams} <= {"stdout"}, streams  # nothing on stderr
        printed += "".join(text for _, text in streams)
    # Exactly what the program and its workers print, nothing more: the same characters
    # (the kernel forwards the workers' output as it reads it from their descriptor, so
    # a worker's line may be cut by the program's own), and each of the program's own
    # lines whole, in its cell.
    expected = "".join(line for _, lines, _ in CELLS for line in lines)
    assert sorted(printed) == sorted(expected)
    assert "[-1, -2]" in "".join(text for _, text in _streams(notebook.cells[1]))
    assert "[1, 2, 3]" in "".join(text for _, text in _streams(notebook.cells[3]))
