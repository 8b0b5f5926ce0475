"""A pytest plugin that registers shoal's joblib backend before joblib's own tests are
collected: ``test_parallel.py`` builds its backend lists at import, from what is
registered then."""

import shoal.joblib  # noqa: F401  (registers the "shoal" backend)
