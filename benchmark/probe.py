"""``python -m benchmark.probe``: the command line of :mod:`benchmark.stages.probe`."""

import sys

from benchmark.stages.probe import main

if __name__ == "__main__":
    sys.exit(main())
