"""``python -m benchmark.segment``: the command line of the ``segment`` kind of :mod:`benchmark.stages.dense`."""

from benchmark.errors import command, start_command

main = command("benchmark.stages.dense", "segment_main")

if __name__ == "__main__":
    start_command(main)
