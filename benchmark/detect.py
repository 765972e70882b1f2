"""``python -m benchmark.detect``: the command line of the ``detect`` kind of :mod:`benchmark.stages.dense`."""

import sys

from benchmark.stages.dense import detect_main as main

if __name__ == "__main__":
    sys.exit(main())
