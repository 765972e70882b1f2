"""``python -m benchmark.segment``: the command line of :mod:`benchmark.stages.segment`."""

import sys

from benchmark.stages.segment import main

if __name__ == "__main__":
    sys.exit(main())
