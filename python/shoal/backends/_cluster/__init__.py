"""What the cluster backends (Dask, Ray) share: the code that runs a chunk on a cluster's
worker (``remote``), how a job's function travels there (``shipping``), and each engine's
connection, opened for a pool or found running (``dask_session``, ``ray_session``)."""
