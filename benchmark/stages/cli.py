"""The command line every training stage shares:

    python -m benchmark.<stage> --config CONFIG.json --out RUN_DIR [--resume auto|never] [--corrupt-images skip|fail]

The config file holds the stage's config dataclass as a JSON object (every key and type checked,
the nearest key suggested for a misspelt one). Bad input is one ``error:`` line and exit code 2
(:data:`~benchmark.errors.EXIT_BAD_INPUT`), nothing written; a stop signal is one line and exit
code 75 (:data:`~benchmark.errors.EXIT_PREEMPTED`: run the same command again to resume); Ctrl-C too,
with code 130 (:data:`~benchmark.errors.EXIT_INTERRUPTED`), and a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from benchmark.data.folders import CORRUPT_ENV, CORRUPT_POLICIES, set_corrupt_policy
from benchmark.errors import ConfigError
from benchmark.training.config import read_config
from benchmark.training.distributed import shutdown
from benchmark.utils.cli_errors import cli_errors
from benchmark.utils.lock import exclusive, main_process


def stage_main(name: str, description: str, config_cls: type, run: Callable[[Any, str, bool], Any],
               report: Callable[[Any], str | None], argv: list[str] | None = None) -> int:
    """Parses the arguments, runs ``run(config, out, resume)`` holding the run directory's lock,
    and prints ``report(its result)`` (nothing where that is None: the other processes under
    torchrun). A run that fails on bad input leaves no folder it created behind."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmark.{name}", description=description)
    parser.add_argument("--config", required=True, help=f"a JSON file of {config_cls.__name__} fields")
    parser.add_argument("--out", required=True, help="the run directory")
    parser.add_argument("--resume", choices=["auto", "never"], default="auto",
                        help="auto: continue from the run directory's checkpoint, if any; never: start over")
    parser.add_argument("--corrupt-images", choices=CORRUPT_POLICIES, default=None,
                        help="a corrupt or truncated image: skip it (counted in the log) or stop the run (default: "
                             f"${CORRUPT_ENV}, which the driver sets for the runs it starts, else skip)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        with cli_errors(name, out) as stopped:
            if args.corrupt_images is not None:
                set_corrupt_policy(args.corrupt_images)
            cfg = read_config(config_cls, args.config)
            if out.exists() and not out.is_dir():
                raise ConfigError(f"--out {out}: a file, not a run directory")
            with exclusive(out, "run directory") if main_process() else nullcontext():
                result = run(cfg, args.out, args.resume == "auto")
    finally:
        shutdown()
    if stopped.code is not None:
        return stopped.code
    line = report(result)
    if line:
        print(line)
    return 0
