"""``multiprocessing.connection`` as it is: multiprocessing's connections, listeners and
clients, importable as ``shoal.connection`` so that a program whose imports changed to shoal
finds it."""

from multiprocessing.connection import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.connection")
