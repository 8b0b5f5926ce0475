"""``multiprocessing.queues`` with shoal's ``Queue``, ``SimpleQueue`` and ``JoinableQueue``
(shared memory); its other names are multiprocessing's, so that a program whose imports
changed to shoal finds them."""

from shoal._mp.joinable import JoinableQueue
from shoal._mp.mirror import mirror as _mirror
from shoal._mp.queues import Queue, SimpleQueue

__all__ = ["JoinableQueue", "Queue", "SimpleQueue"]

__getattr__ = _mirror("multiprocessing.queues")
