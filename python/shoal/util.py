"""``multiprocessing.util`` as it is: multiprocessing's logging and finalizers, importable as
``shoal.util`` so that a program whose imports changed to shoal finds it."""

from multiprocessing.util import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.util")
