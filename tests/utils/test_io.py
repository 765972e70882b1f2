"""Writing files: the permissions a user's umask gives, and a real full disk (a file-size limit in a
child process, which fails every writer the way a full disk does) for every writer of the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import REPO
from benchmark.utils.io import write_json, write_text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_permissions_the_umask_gives(umask: int, mode: int, tmp_path: Path) -> None:
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "result.json", {"a": 1})
        write_text(tmp_path / "REPORT.md", "# Report\n")
    finally:
        os.umask(previous)
    for name in ("result.json", "REPORT.md"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


# Runs in a child process whose file-size limit (ulimit -f) makes every write of more than LIMIT
# bytes fail with EFBIG, as a full disk fails it with ENOSPC: torch's zip writer, safetensors,
# JSON and text all meet the operating system's refusal, nothing is replaced.
CHILD = """
import json, resource, signal, sys
import torch
from benchmark.errors import DiskFull
from benchmark.models.checkpoints.export import save_encoder_state
from benchmark.utils.io import torch_save, write_json, write_text

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
out, big = sys.argv[1], {"x": torch.zeros(100_000)}
writers = {
    "checkpoint.pth": lambda path: torch_save({"model": big, "step": 2}, path),
    "encoder.safetensors": lambda path: save_encoder_state(big, {"arch": "vit-smoke", "img_size": 64}, path),
    "result.json": lambda path: write_json(path, {"values": list(range(100_000))}),
    "REPORT.md": lambda path: write_text(path, "x" * 1_000_000),
}
said = {}
for name, write in writers.items():
    try:
        write(f"{out}/{name}")
        said[name] = "written"
    except DiskFull as err:
        said[name] = str(err)
print(json.dumps(said))
"""


def test_every_writer_meets_a_real_full_disk_with_disk_full_and_keeps_the_earlier_file(tmp_path: Path) -> None:
    earlier = {name: f"earlier {name}".encode() for name in ("checkpoint.pth", "encoder.safetensors", "result.json",
                                                            "REPORT.md")}
    for name, data in earlier.items():
        (tmp_path / name).write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), "10000"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    said = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, data in earlier.items():
        assert said[name].startswith(f"{tmp_path / name}: no space left on device; not written (an earlier version"), said
        assert (tmp_path / name).read_bytes() == data
    assert not list(tmp_path.glob(".*.tmp"))  # the partial writes were removed
