"""``python -m benchmark.convert``: the command line of the checkpoint conversions.

    python -m benchmark.convert ENCODER.safetensors OUT.pth      # encoder export -> mm backbone
    python -m benchmark.convert mm ENCODER.safetensors OUT.pth   # the same, named
    python -m benchmark.convert import SRC OUT.safetensors [--from auto|timm|deit|mae|dino|beit|mmpretrain]
        [--arch ARCH] [--which teacher|student]                  # published checkpoint -> encoder export
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from benchmark.errors import EXIT_BAD_INPUT, InputError, SuiteError, error_line
from benchmark.models.checkpoints.export import save_encoder_state, to_mm
from benchmark.models.checkpoints.published import SOURCES, Imported, dropped_summary, import_checkpoint
from benchmark.models.vit import ARCHS

T = TypeVar("T")


def check_output(src: str, out: str) -> None:
    """:class:`InputError` unless ``out`` is a file path that can be written without touching
    ``src``: not ``src`` itself (by any name: a link, ``./``), not a directory, not below a file."""
    target, parent = Path(out), Path(out).parent
    if target.is_dir():
        raise InputError(f"{out}: a directory, not a file; give the path of the file to write in it")
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{out}: {parent} is a file, not a directory")
    if target.exists() and Path(src).exists() and os.path.samefile(src, out):
        raise InputError(f"{out}: the same file as the input {src}; writing it would replace the input: "
                         "give another output path")


def _converted(src: str, out: str, write: Callable[[], T]) -> T | None:
    """What ``write()``, writing ``out`` from ``src``, returns; None, and why in one line on stderr,
    where the input is bad or ``out`` cannot be written."""
    try:
        check_output(src, out)
        return write()
    except SuiteError as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
    except OSError as err:  # the output cannot be written (permissions, a read-only disk)
        print(f"error: could not write {out}: {error_line(err)}", file=sys.stderr)
    return None


def _main_import(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.convert import",
        description="Imports a published checkpoint (timm/DeiT, MAE, DINO, BEiT, mmpretrain) as an encoder export.",
    )
    parser.add_argument("src", help="the published checkpoint (.pth / .pt / .bin / .safetensors)")
    parser.add_argument("out", help="where to write the encoder export (.safetensors)")
    parser.add_argument(
        "--from", dest="source", default="auto", choices=("auto",) + SOURCES, help="its format (default: recognised by its keys)"
    )
    parser.add_argument("--arch", default=None, choices=sorted(ARCHS), help="default: inferred from tensor shapes")
    parser.add_argument("--which", default="teacher", choices=("teacher", "student"), help="of a DINO training checkpoint")
    args = parser.parse_args(argv)

    def write() -> Imported:
        result = import_checkpoint(args.src, args.source, args.arch, args.which)
        save_encoder_state(result.state, result.spec, args.out, source=f"{result.source}:{args.src}")
        return result

    if (result := _converted(args.src, args.out, write)) is None:
        return EXIT_BAD_INPUT
    print(f"source format: {result.source}; model: {json.dumps(result.spec)}; {len(result.state)} tensors")
    if result.dropped:
        print(f"dropped {len(result.dropped)} key(s) by name:")
        for line in dropped_summary(result.dropped):
            print(f"  {line}")
    else:
        print("dropped nothing")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {args.out}")
    return 0


def _main_mm(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.convert [mm]",
        description="Converts an encoder export into an MMDetection / MMSegmentation backbone checkpoint.",
        epilog="To import a published checkpoint: python -m benchmark.convert import --help",
    )
    parser.add_argument("encoder", help="an encoder export (.safetensors)")
    parser.add_argument("out", help="where to write the mm backbone checkpoint (.pth)")
    args = parser.parse_args(argv)
    if _converted(args.encoder, args.out, lambda: to_mm(args.encoder, args.out)) is None:
        return EXIT_BAD_INPUT
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``import SRC OUT`` imports a published checkpoint; ``[mm] ENCODER OUT`` writes an mm backbone."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["import"]:
        return _main_import(argv[1:])
    if argv[:1] == ["mm"]:
        return _main_mm(argv[1:])
    return _main_mm(argv)
