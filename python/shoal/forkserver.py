"""``multiprocessing.forkserver`` as it is: multiprocessing's fork server, importable as
``shoal.forkserver`` so that a program whose imports changed to shoal finds it."""

from multiprocessing.forkserver import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.forkserver")
