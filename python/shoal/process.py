"""``multiprocessing.process`` as it is: multiprocessing's processes, importable as
``shoal.process`` so that a program whose imports changed to shoal finds it."""

from multiprocessing.process import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.process")
