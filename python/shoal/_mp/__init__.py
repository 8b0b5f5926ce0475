"""multiprocessing's objects, built on shoal's engine: the queues (``queues``,
``joinable``), the locks and semaphores (``locks``), ``Condition``, ``Event`` and
``Barrier`` (``conditions``), the shared ctypes objects (``sharedctypes``) and the
contexts that hand them out (``context``). Each lives in shared memory of its own and
reaches any process, however it was started."""
