"""``multiprocessing.shared_memory`` as it is: multiprocessing's ``SharedMemory`` and
``ShareableList``, importable as ``shoal.shared_memory`` so that a program whose imports
changed to shoal finds it."""

from multiprocessing.shared_memory import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.shared_memory")
