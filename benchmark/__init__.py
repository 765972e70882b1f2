"""SSL pre-training benchmark suite."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the repository: configs_mm/, tables/, plots/, runs/ are below it
