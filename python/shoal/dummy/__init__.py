"""``shoal.dummy``: shoal's API on threads in this process, as ``multiprocessing.dummy``
is to ``multiprocessing``. Nothing is pickled; objects are shared as they are.

Example:
    >>> from shoal.dummy import Queue
    >>> q = Queue()
    >>> q.put_many([1, 2]); q.get_many()
    [1, 2]
"""

from shoal.dummy._pool import Pool
from shoal.dummy._queue import Queue

__all__ = ["Pool", "Queue"]
