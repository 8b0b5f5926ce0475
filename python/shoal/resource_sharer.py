"""``multiprocessing.resource_sharer`` as it is: multiprocessing's resource sharer, importable
as ``shoal.resource_sharer`` so that a program whose imports changed to shoal finds it."""

from multiprocessing.resource_sharer import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.resource_sharer")
