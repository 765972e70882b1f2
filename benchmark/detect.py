"""``python -m benchmark.detect``: the command line of :mod:`benchmark.stages.detect`."""

import sys

from benchmark.stages.detect import main

if __name__ == "__main__":
    sys.exit(main())
