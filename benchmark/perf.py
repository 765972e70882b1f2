"""``python -m benchmark.perf``: the command line of :mod:`benchmark.tools.perf`."""

import sys

from benchmark.tools.perf import main

if __name__ == "__main__":
    sys.exit(main())
