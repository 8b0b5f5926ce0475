"""``python -m shoal demo``: see ``shoal._demo``."""

from shoal._demo import main

if __name__ == "__main__":
    main()
