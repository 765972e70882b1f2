"""``python -m benchmark.finetune``: the command line of :mod:`benchmark.stages.finetune`."""

import sys

from benchmark.stages.finetune import main

if __name__ == "__main__":
    sys.exit(main())
