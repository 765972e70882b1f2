"""``python -m benchmark.detect``: the command line of the ``detect`` kind of :mod:`benchmark.stages.dense`."""

from benchmark.errors import command, start_command

main = command("benchmark.stages.dense", "detect_main")

if __name__ == "__main__":
    start_command(main)
