"""``multiprocessing.sharedctypes`` with shoal's ``Value``, ``Array``, ``RawValue`` and
``RawArray`` (each in a memfd of its own); its other names (``copy``, ``synchronized``...)
are multiprocessing's, so that a program whose imports changed to shoal finds them."""

from multiprocessing.sharedctypes import copy, synchronized

from shoal._mp.mirror import mirror as _mirror
from shoal._mp.sharedctypes import Array, RawArray, RawValue, Value

__all__ = ["Array", "RawArray", "RawValue", "Value", "copy", "synchronized"]

__getattr__ = _mirror("multiprocessing.sharedctypes")
