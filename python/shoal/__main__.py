"""``python -m shoal demo`` (see ``shoal._demo``) and ``python -m shoal info`` (see
``shoal._info``)."""

from shoal._demo import main

if __name__ == "__main__":
    main()
