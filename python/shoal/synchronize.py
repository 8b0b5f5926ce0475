"""``multiprocessing.synchronize`` with shoal's locks, semaphores, ``Condition``, ``Event``
and ``Barrier`` (each in shared memory of its own, never wedged by a killed holder); its
other names are multiprocessing's, so that a program whose imports changed to shoal
finds them."""

from shoal._mp.conditions import Barrier, Condition, Event
from shoal._mp.locks import BoundedSemaphore, Lock, RLock, Semaphore
from shoal._mp.mirror import mirror as _mirror

__all__ = ["Barrier", "BoundedSemaphore", "Condition", "Event", "Lock", "RLock", "Semaphore"]

__getattr__ = _mirror("multiprocessing.synchronize")
