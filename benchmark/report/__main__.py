"""``python -m benchmark.report``: :mod:`benchmark.report.build`'s command line."""

import sys

from benchmark.report.build import main

if __name__ == "__main__":
    sys.exit(main())
