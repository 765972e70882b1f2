"""``python -m benchmark.convert``: the command line of :mod:`benchmark.models.checkpoints.cli`."""

import sys

from benchmark.models.checkpoints.cli import main

if __name__ == "__main__":
    sys.exit(main())
