"""``multiprocessing.spawn`` as it is: multiprocessing's spawning helpers, importable as
``shoal.spawn`` so that a program whose imports changed to shoal finds it."""

from multiprocessing.spawn import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.spawn")
