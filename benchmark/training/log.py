"""The training log: one JSON object per line (``log.jsonl``, read back by
:func:`benchmark.utils.io.read_log`) plus a one-line progress display on stderr."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from benchmark.errors import DiskFull
from benchmark.utils.io import append_line, disk_full, log_lines, write_text


class RunLog:
    """A JSON-lines log (one object per line) plus a one-line progress display on stderr with
    loss, learning rate, images/s and time left. Each record is written whole or not at all; on a
    full disk :class:`DiskFull` says so, and the log stays as it was."""

    def __init__(self, path: Path, total_steps: int, start_step: int, desc: str, every: int = 10) -> None:
        self.path = path
        self.total, self.start, self.desc, self.every = total_steps, start_step, desc, every
        self.t0 = time.time()
        self.images = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            # A resumed run repeats the steps after its checkpoint: drop their old records, and any
            # torn line a kill or a full disk left.
            lines = log_lines(path)
            torn = sum(record is None for _, record in lines)
            if torn:
                print(f"[{desc}] {path}: dropped {torn} torn line(s), left by a write that did not finish", file=sys.stderr)
            kept = [line for line, record in lines if record is not None and record.get("step", 0) <= start_step]
            write_text(path, "".join(f"{line}\n" for line in kept))
        self.fh = open(path, "ab", buffering=0)

    def _write(self, record: dict) -> None:
        try:
            append_line(self.fh, self.path, json.dumps(record) + "\n")
        except DiskFull as err:
            raise disk_full(err, f"{self.path}: no space left on device while logging step {record['step']}; the log "
                                 "holds the steps before it: free some space, then run the same command again to "
                                 "resume") from None

    def step(self, step: int, batch_size: int, **scalars: float) -> None:
        self.images += batch_size
        done = step + 1
        if done % self.every and done != self.total:
            return
        elapsed = max(time.time() - self.t0, 1e-9)
        rate = self.images / elapsed
        left = (self.total - done) * elapsed / max(done - self.start, 1)
        record = {"step": done, "time": round(elapsed, 3), "img_per_s": round(rate, 2),
                  **{k: float(v) for k, v in scalars.items()}}
        self._write(record)
        shown = " ".join(f"{k} {float(v):.4g}" for k, v in scalars.items())
        print(f"[{self.desc}] step {done}/{self.total} {shown} | {rate:.1f} img/s | ETA {_fmt_time(left)}",
              file=sys.stderr, flush=True)

    def record(self, step: int, **values: float) -> None:
        """A record of its own at ``step`` (steps done), e.g. the online monitor's score."""
        record = {"step": step, "time": round(time.time() - self.t0, 3), **{k: float(v) for k, v in values.items()}}
        self._write(record)
        shown = " ".join(f"{k} {float(v):.4g}" for k, v in values.items())
        print(f"[{self.desc}] step {step}/{self.total} {shown}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.fh.close()


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
