"""tqdm's documented recipes for bars in worker processes, on shoal: the lock handed to
workers through ``initargs`` (``tqdm.set_lock``), and ``tqdm.contrib.concurrent``'s
executor map given shoal's ProcessPoolExecutor. Scripts run as ``__main__``, no guard."""

from __future__ import annotations

from pathlib import Path

from scripts import run_script


def test_the_set_lock_recipe_in_a_pools_initargs(tmp_path: Path) -> None:
    done = run_script(
        """
        import shoal
        from tqdm import tqdm

        def work(n):
            with tqdm.get_lock():  # the lock the parent handed over
                return n * 2

        with shoal.Pool(2, initializer=tqdm.set_lock, initargs=(tqdm.get_lock(),)) as pool:
            print(pool.map(work, range(5)))
        """,
        tmp_path,
        "zygote",  # (unused: the recipe gives no start method, as its users write it)
    )
    assert done.stdout.splitlines() == ["[0, 2, 4, 6, 8]"]


def test_tqdm_contrib_concurrent_on_shoals_executor(tmp_path: Path) -> None:
    done = run_script(
        """
        import shoal
        from tqdm.contrib.concurrent import _executor_map

        offset = 100
        print(_executor_map(shoal.ProcessPoolExecutor, lambda n: n + offset, range(4),
                            max_workers=2, chunksize=1))
        """,
        tmp_path,
        "zygote",
    )
    assert done.stdout.splitlines() == ["[100, 101, 102, 103]"]
    assert "4/4" in done.stderr  # tqdm's bar ran to its end
