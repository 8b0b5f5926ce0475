"""The package's surface: every public name resolves, and ``import shoal`` stays light
(names load on first use; the process pool's zygote starts only with the Pool)."""

from __future__ import annotations

import subprocess
import sys

import shoal


def test_every_public_name_resolves() -> None:
    assert sorted(shoal.__all__) == sorted({*shoal._HOMES, *shoal._AS_IN_MULTIPROCESSING})
    for name in shoal.__all__:
        assert getattr(shoal, name) is not None
    assert set(shoal.__all__) <= set(dir(shoal))


def test_import_shoal_loads_neither_the_pool_nor_pickling() -> None:
    code = (
        "import sys, shoal; "
        "print(sorted(m for m in ('shoal.pool', 'cloudpickle', 'multiprocessing') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
