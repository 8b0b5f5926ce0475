"""``multiprocessing.context`` as it is: multiprocessing's contexts (``shoal.get_context``
gives contexts with shoal's objects in them), importable as ``shoal.context`` so that a
program whose imports changed to shoal finds it."""

from multiprocessing.context import *  # noqa: F403

from shoal._mp.mirror import mirror as _mirror

__getattr__ = _mirror("multiprocessing.context")
