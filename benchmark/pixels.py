"""``python -m benchmark.pixels``: the command line of :mod:`benchmark.stages.pixels`."""

import sys

from benchmark.stages.pixels import main

if __name__ == "__main__":
    sys.exit(main())
