"""``multiprocessing.dummy.connection`` as it is (connections between threads),
importable as ``shoal.dummy.connection``."""

from multiprocessing.dummy.connection import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.dummy.connection")
