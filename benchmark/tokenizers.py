"""``python -m benchmark.tokenizers``: the command line of :mod:`benchmark.methods.tokenizers`."""

import sys

from benchmark.methods.tokenizers import main

if __name__ == "__main__":
    sys.exit(main())
