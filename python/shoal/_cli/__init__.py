"""``python -m shoal``'s commands: ``demo`` (``demo``) and ``info`` (``info``)."""
