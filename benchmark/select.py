"""``python -m benchmark.select``: the command line of :mod:`benchmark.stages.select`."""

from benchmark.errors import command, start_command

main = command("benchmark.stages.select")

if __name__ == "__main__":
    start_command(main)
