"""The training log: one JSON object per line (``log.jsonl``, read back by
:func:`benchmark.utils.io.read_log`) plus a one-line progress display on stderr."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from benchmark.utils.io import write_text


class RunLog:
    """A JSON-lines log (one object per line) plus a one-line progress display on stderr with
    loss, learning rate, images/s and time left."""

    def __init__(self, path: Path, total_steps: int, start_step: int, desc: str, every: int = 10) -> None:
        self.path = path
        self.total, self.start, self.desc, self.every = total_steps, start_step, desc, every
        self.t0 = time.time()
        self.images = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            # A resumed run repeats the steps after its checkpoint: drop their old records.
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= start_step]
            write_text(path, "".join(f"{line}\n" for line in kept))
        self.fh = open(path, "a")

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
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        shown = " ".join(f"{k} {float(v):.4g}" for k, v in scalars.items())
        print(f"[{self.desc}] step {done}/{self.total} {shown} | {rate:.1f} img/s | ETA {_fmt_time(left)}",
              file=sys.stderr, flush=True)

    def record(self, step: int, **values: float) -> None:
        """A record of its own at ``step`` (steps done), e.g. the online monitor's score."""
        record = {"step": step, "time": round(time.time() - self.t0, 3), **{k: float(v) for k, v in values.items()}}
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
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
