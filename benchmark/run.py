"""``python -m benchmark.run``: the command line of :mod:`benchmark.driver.run`."""

import sys

from benchmark.driver.run import main

if __name__ == "__main__":
    sys.exit(main())
