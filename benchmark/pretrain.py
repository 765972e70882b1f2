"""``python -m benchmark.pretrain``: the command line of :mod:`benchmark.stages.pretrain`."""

import sys

from benchmark.stages.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
