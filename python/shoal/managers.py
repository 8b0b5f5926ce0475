"""``multiprocessing.managers`` as it is: multiprocessing's managers and proxies, importable as
``shoal.managers`` so that a program whose imports changed to shoal finds it."""

from multiprocessing.managers import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.managers")
