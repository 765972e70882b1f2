"""``python -m benchmark.perf``: the command line of :mod:`benchmark.tools.perf`."""

from benchmark.errors import command, start_command

main = command("benchmark.tools.perf")

if __name__ == "__main__":
    start_command(main)
