"""``python -m benchmark.probe``: the command line of :mod:`benchmark.stages.probe`."""

from benchmark.errors import command, start_command

main = command("benchmark.stages.probe")

if __name__ == "__main__":
    start_command(main)
