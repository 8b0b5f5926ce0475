"""``multiprocessing.heap`` as it is: multiprocessing's heap for its shared ctypes objects,
importable as ``shoal.heap`` so that a program whose imports changed to shoal finds it."""

from multiprocessing.heap import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.heap")
