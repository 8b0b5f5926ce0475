"""``multiprocessing.managers`` with shoal's ``BaseManager``, ``SyncManager`` and
``SharedMemoryManager`` (their server a ``shoal.Process``: no ``__main__`` guard, types
registered in the script travel by value); its other names (the proxies, ``Token``,
``Server``...) are multiprocessing's, so that a program whose imports changed to shoal
finds them."""

from shoal._mp.managers import BaseManager, SharedMemoryManager, SyncManager
from shoal._mp.mirror import mirror as _mirror

__all__ = ["BaseManager", "SharedMemoryManager", "SyncManager"]

__getattr__ = _mirror("multiprocessing.managers")
