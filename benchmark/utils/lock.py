"""Locks that keep two processes off the same runs directory, run directory or report directory: a
second driver, a second command on a run directory in use, or a second report, says who holds it
and stops (or waits).

The lock is ``fcntl.flock`` on the directory itself, which the operating system releases when the
holder exits, however it exits: a killed run never leaves a stale lock behind. While it holds the
lock, the holder describes itself (process id, host, start time, command) in ``.lock`` inside the
directory, so that a refusal can name it; the file goes when the lock is released.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark.errors import SuiteError

LOCK_FILE = ".lock"


class Busy(SuiteError):
    """A runs directory or run directory that another process holds."""


def _holder(info: Path) -> str:
    try:
        who = json.loads(info.read_text())
    except (OSError, ValueError):
        return "another process"
    return (f"process {who.get('pid')} on {who.get('host')} (started {who.get('started')}: "
            f"{who.get('command', '?')})")


@contextmanager
def exclusive(folder: str | os.PathLike, what: str, wait: bool = False, poll_s: float = 5.0) -> Iterator[None]:
    """Holds the lock of ``folder`` (created if missing) for the block. If another process holds
    it: :class:`Busy` naming that process, or with ``wait`` a line saying so and a wait until it is
    free. ``what`` names the folder in messages ("runs directory", "run directory")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = folder / LOCK_FILE
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(info)
                if not wait:
                    raise Busy(f"{folder}: this {what} is in use by {holder}; wait for it to finish (or pass "
                               "--wait), or use another directory") from None
                if not said:
                    print(f"[lock] {folder}: in use by {holder}; waiting", file=sys.stderr, flush=True)
                    said = True
                time.sleep(poll_s)
        info.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                                    "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
        try:
            yield
        finally:
            info.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


def in_use_by(folder: str | os.PathLike) -> str | None:
    """Who holds the lock of ``folder`` now (as a refusal names it), or None while it is free or
    missing. Takes nothing: a free lock is released at once."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(Path(folder) / LOCK_FILE)
    finally:
        os.close(fd)
    return None


def main_process() -> bool:
    """Whether this process is the one of its run that writes (rank 0 under torchrun, or alone)."""
    return os.environ.get("RANK", "0") == "0"
