"""``python -m benchmark.select``: the command line of :mod:`benchmark.stages.select`."""

import sys

from benchmark.stages.select import main

if __name__ == "__main__":
    sys.exit(main())
