"""How long a pool takes to be working in a program that imported a heavy library first.

Each run is a fresh interpreter that imports the library (pandas, or numpy when pandas is
not installed), does 0 or 0.5 s of its own work (a sleep: the time a program spends
reading its data, in which shoal's zygote imports the library too), then times
``Pool(2)`` until ``map`` of 4 tasks (each uses the library and sleeps 50 ms, chunksize
1, so both workers take part) has returned and the pool's ``with`` block has ended.

Peers: ``shoal.Pool`` imported with ``from shoal import Pool`` (its zygote starts then
and imports the program's installed modules while the program goes on); the same with
``SHOAL_PRELOAD=0`` (each worker imports what its tasks need); ``import shoal`` with
``shoal.Pool(2)`` (the zygote starts, and imports, only when the pool is made); shoal
forking its workers from the program (``start_method="fork"``); and
``multiprocessing.Pool`` with fork and with spawn. The median of ``--repeats`` runs (5 by
default), interleaved across peers; the ratio is the peer's time over shoal's, timing
the pool only (higher is better for shoal). Nothing here is asserted.

Usage::

    python benches/startup_bench.py
    python benches/startup_bench.py --repeats 9
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile

LIBRARY = "pandas" if importlib.util.find_spec("pandas") is not None else "numpy"

PROGRAM = """
import time
import {library} as lib
{pool_import}

time.sleep({work})  # the program's own work before it makes a pool (reading its data...)

def task(x):
    time.sleep(0.05)
    return len(lib.__name__) + x

if __name__ == "__main__":  # multiprocessing's spawn needs it
    t0 = time.perf_counter()
    with {make_pool} as pool:
        assert pool.map(task, range(4), chunksize=1) == [len(lib.__name__) + x for x in range(4)]
    print((time.perf_counter() - t0) * 1e3)
"""

PEERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "shoal": ("from shoal import Pool", "Pool(2)", {}),
    "shoal, SHOAL_PRELOAD=0": ("from shoal import Pool", "Pool(2)", {"SHOAL_PRELOAD": "0"}),
    "shoal, import shoal": ("import shoal", "shoal.Pool(2)", {}),
    "shoal, start_method='fork'": ("from shoal import Pool", "Pool(2, start_method='fork')", {}),
    "mp fork": (
        "import multiprocessing",
        "multiprocessing.get_context('fork').Pool(2)",
        {},
    ),
    "mp spawn": (
        "import multiprocessing",
        "multiprocessing.get_context('spawn').Pool(2)",
        {},
    ),
}


def run_once(peer: str, folder: str, work: float) -> float:
    """One fresh interpreter's time, in ms (the program is a file: spawn needs one)."""
    pool_import, make_pool, env = PEERS[peer]
    script = os.path.join(folder, "program.py")
    with open(script, "w") as file:
        file.write(
            PROGRAM.format(library=LIBRARY, pool_import=pool_import, make_pool=make_pool, work=work)
        )
    done = subprocess.run(
        [sys.executable, script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    works = (0.0, 0.5)
    times: dict[tuple[str, float], list[float]] = {(p, w): [] for p in PEERS for w in works}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for peer, work in times:
                times[peer, work].append(run_once(peer, folder, work))
    medians = {key: statistics.median(ts) for key, ts in times.items()}
    print(f"import {LIBRARY}, [the program's own work,] then Pool(2) until 4 tasks are done")
    print(f"and it is closed; ms, median of {args.repeats} fresh interpreters\n")
    print("| pool | no work between | ÷ shoal | 0.5 s of work between | ÷ shoal |")
    print("| :--- | ---: | ---: | ---: | ---: |")
    for peer in PEERS:
        cells = []
        for work in works:
            ms = medians[peer, work]
            cells += [f"{ms:.0f}", f"{ms / medians['shoal', work]:.2f}x"]
        print(f"| {peer} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
