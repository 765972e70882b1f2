"""``python -m benchmark.pixels``: the command line of :mod:`benchmark.stages.pixels`."""

from benchmark.errors import command, start_command

main = command("benchmark.stages.pixels")

if __name__ == "__main__":
    start_command(main)
