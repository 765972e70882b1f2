"""``python -m benchmark.convert``: the command line of :mod:`benchmark.models.checkpoints.cli`."""

from benchmark.errors import command, start_command

main = command("benchmark.models.checkpoints.cli")

if __name__ == "__main__":
    start_command(main)
