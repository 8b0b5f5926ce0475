"""What crosses between processes, and what a worker loads to read it: pickling with
errors that name the culprit (``pickling``, ``culprit``), the namespaces functions sent
by value live in (``namespaces``), large buffers out of band through shared memory
(``buffers``), objects placed in shared memory once (``shared``), and what a worker tells
of a chunk besides its results (``labels``). Nothing here imports the Pool or a backend,
so that a worker process starts with only what it needs."""
