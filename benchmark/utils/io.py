"""Atomic file writes: a reader never sees a half-written checkpoint, result or table.

Every writer goes through :func:`atomic_path`: the data goes to a hidden temporary file beside the
target (``.NAME.XXXX.tmp``), is flushed to disk (``fsync``) and only then renamed over the target
(``os.replace``, atomic on POSIX). A crash or a full disk leaves the previous version of the file
(or none) in place, never a partial one; a full disk raises :class:`DiskFull`, naming the file.
The one file written in place, a run's JSON-lines log, grows by whole lines (:func:`append_line`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmark.errors import DiskFull

# A full disk, a full quota, or a file-size limit (ulimit -f): the write stopped for want of room.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_full(err: OSError, message: str) -> DiskFull:
    """The :class:`DiskFull` for ``err`` (a full disk, quota or file-size limit), saying ``message``."""
    full = DiskFull(message)
    full.errno = err.errno
    return full


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> what the user's umask gives any new file
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:  # on disk before it gets the real name
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)  # frees the space a partial write took
        if isinstance(err, OSError) and err.errno in _FULL and not isinstance(err, DiskFull):
            raise disk_full(err, f"{path}: no space left on device; not written (an earlier version of the file, if "
                                 f"any, is unchanged; {err.strerror})") from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def append_line(fh: Any, path: str | os.PathLike, line: str) -> None:
    """Appends ``line`` to ``fh`` (``path`` opened with ``open(path, "ab", buffering=0)``) whole or
    not at all: a write the disk cannot finish is cut off again, so that the file never ends in a
    torn line, and a full disk raises :class:`DiskFull`."""
    start = fh.seek(0, os.SEEK_END)
    data = memoryview(line.encode())
    try:
        while data:
            data = data[fh.write(data):]  # a write may stop short at the disk's (or ulimit -f's) end
    except OSError as err:
        os.ftruncate(fh.fileno(), start)
        if err.errno in _FULL:
            raise disk_full(err, f"{path}: no space left on device; the line was not written ({err.strerror})") from None
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class _WriteErrors:
    """A binary file that remembers the first error of its ``write`` (torch's zip writer turns a
    failed write into an opaque RuntimeError; this keeps the OSError that caused it)."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.error = fh, None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.fh.flush()


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        out = _WriteErrors(fh)
        try:
            torch.save(obj, out)
        except RuntimeError:
            if out.error is not None:  # a full disk: raised as the OSError it is (atomic_path reports it)
                raise out.error from None
            raise


def save_safetensors(tensors: dict[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """safetensors written atomically through Python's file writes (so that a full disk is an
    OSError that :func:`atomic_path` reports, not safetensors' own error type)."""
    from safetensors.torch import save

    write_bytes(path, _sorted_metadata(save(tensors, metadata=metadata)))


def _sorted_metadata(data: bytes) -> bytes:
    """safetensors bytes whose header lists the metadata in sorted order: safetensors writes it from
    a Rust HashMap, whose order changes from process to process, and with it the file's sha256."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes, with spaces
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's ``log.jsonl`` (written by ``benchmark.training.log.RunLog``), in order.
    Here, without torch, so that the report can read logs too."""
    return [record for _, record in log_lines(Path(run_dir) / "log.jsonl") if record is not None]


def log_lines(path: str | os.PathLike) -> list[tuple[str, dict[str, Any] | None]]:
    """Each line of a JSON-lines log with its record; None for a line that holds no whole record
    (the torn end of a write that a kill or a full disk cut short)."""
    lines = []
    for line in Path(path).read_bytes().decode(errors="replace").splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            lines.append((line, record if isinstance(record, dict) else None))
    return lines


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_failure(err: BaseException, limit: int = 300) -> str:
    """Why ``torch.load`` failed, on one short line: for a ``weights_only`` refusal, the global it
    refused (torch's message puts it after several lines of advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    line = next((ln for ln in lines if "GLOBAL" in ln), lines[0])
    return " ".join(line.split())[:limit]


def remove_if_empty(folder: str | os.PathLike) -> None:
    """Removes ``folder`` if it exists and holds nothing (a run directory a failed run created)."""
    folder = Path(folder)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
