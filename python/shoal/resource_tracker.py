"""``multiprocessing.resource_tracker`` as it is: multiprocessing's resource tracker (shoal's
workers use the program's), importable as ``shoal.resource_tracker`` so that a program whose
imports changed to shoal finds it."""

from multiprocessing.resource_tracker import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.resource_tracker")
