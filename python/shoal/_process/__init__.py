"""The process backend's machinery, private to it: how workers are started (``launch``,
``zygote``, ``preload``), what they are handed (``handover``, ``identity``) and the loop
they run (``worker``). The backend that drives them is ``shoal.backends.process``; it
lives apart from it so that a worker process imports none of the backend package."""
