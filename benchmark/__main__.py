"""python -m benchmark <command>: the suite's small utilities.

    doctor    check the installed stack (versions, compiled ops, GPU)

The suite's commands are python -m benchmark.run (the driver), .pretrain, .finetune, .probe,
.select, .detect, .segment, .report, .convert, .perf and .tokenizers (each with --help).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["doctor"]:
        from benchmark.tools.doctor import run_doctor

        return run_doctor()
    print(__doc__.strip(), file=sys.stderr)
    if argv and argv[0] not in ("-h", "--help"):
        print(f"error: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return 0 if argv else 2


if __name__ == "__main__":
    sys.exit(main())
