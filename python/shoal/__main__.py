"""``python -m shoal demo`` (see ``shoal._cli.demo``) and ``python -m shoal info`` (see
``shoal._cli.info``)."""

from shoal._cli.demo import main

if __name__ == "__main__":
    main()
