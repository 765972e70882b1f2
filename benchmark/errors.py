"""The suite's one error hierarchy. Every command catches :class:`SuiteError`, prints it on one
line (:func:`error_line`) and exits with :data:`EXIT_BAD_INPUT`; anything else is a bug and keeps
its traceback. Each error also derives from the built-in type it used to be, so that code
catching ``ValueError`` or ``OSError`` still catches it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

EXIT_BAD_INPUT = 2       # bad input: a config, a data set, a checkpoint (one ``error:`` line)
EXIT_PREEMPTED = 75      # sysexits' EX_TEMPFAIL: stopped on request, run the same command again to resume
EXIT_INTERRUPTED = 130   # 128 + SIGINT: stopped by Ctrl-C (after a checkpoint; at once on a second Ctrl-C)


class SuiteError(Exception):
    """An error the user can act on: the message says what is wrong and what to do."""


class ConfigError(SuiteError, ValueError):
    """A config key that does not exist or a value of the wrong type or range."""


class DataError(SuiteError, ValueError):
    """A data set that is missing or not in the expected layout."""


class CorruptImage(DataError):
    """An image file that cannot be decoded (truncated, corrupt, not an image, unreadable)."""

    def __init__(self, path: str | Path, reason: Exception | str) -> None:
        self.path, self.reason = Path(path), " ".join(str(reason).split())
        super().__init__(f"{self.path}: corrupt or truncated image ({self.reason})")


class CheckpointError(SuiteError, ValueError):
    """A checkpoint that is not in the expected format or does not match the model."""


class ResultError(SuiteError, ValueError):
    """A result file that does not follow the schema."""


class NonFiniteLoss(SuiteError, RuntimeError):
    """A loss that became NaN or infinite; the message names the last good checkpoint."""


class DiskFull(SuiteError, OSError):
    """No space left (or quota exceeded) while writing a file; the file was left as it was."""


class InputError(SuiteError, ValueError):
    """Bad input to a detection or segmentation run: missing data, a missing config, an unusable
    argument."""


class LaunchError(SuiteError, RuntimeError):
    """A step of a plan failed; the message names its log."""


class Preempted(RuntimeError):
    """A run stopped by a signal after writing its checkpoint; the commands exit with ``code``
    (:data:`EXIT_PREEMPTED` for SIGTERM / SIGUSR2, :data:`EXIT_INTERRUPTED` for Ctrl-C), and running
    the same command again resumes. Not an error of the user's: not a :class:`SuiteError`."""

    def __init__(self, message: str, code: int = EXIT_PREEMPTED) -> None:
        super().__init__(message)
        self.code = code


def error_line(err: BaseException) -> str:
    """An error's message on one line. An error raised in a data-loader worker comes back wrapped
    in a traceback; its own message is the last line."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())



def command(module: str, function: str = "main") -> Callable[[list[str] | None], int]:
    """A command module's ``main``: ``module.function``, imported when it is first called, so that
    the ``python -m benchmark.<command>`` module itself imports nothing that takes time."""
    def main(argv: list[str] | None = None) -> int:
        return getattr(importlib.import_module(module), function)(argv)

    return main


def start_command(main: Callable[[], int]) -> NoReturn:
    """Runs a command module's ``main`` as this process's command and exits with its code. Its first
    seconds import torch, timm, pandas or mmengine and write nothing: a Ctrl-C there, before the
    command's own handling of Ctrl-C, prints one line and exits with :data:`EXIT_INTERRUPTED`
    instead of a traceback."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("interrupted by Ctrl-C while the command was starting: nothing was done", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)
