"""``python -m benchmark.segment``: the command line of the ``segment`` kind of :mod:`benchmark.stages.dense`."""

import sys

from benchmark.stages.dense import segment_main as main

if __name__ == "__main__":
    sys.exit(main())
