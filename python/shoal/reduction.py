"""``multiprocessing.reduction`` as it is: multiprocessing's pickling helpers, importable as
``shoal.reduction`` so that a program whose imports changed to shoal finds it."""

from multiprocessing.reduction import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.reduction")
