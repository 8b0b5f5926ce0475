"""Process-pool machinery: how workers are started (``launch``, ``zygote``) and the loop
they run (``worker``). The backend that drives them is ``shoal.backends.process``."""
