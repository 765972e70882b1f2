"""``python -m benchmark.report``: :mod:`benchmark.report.build`'s command line."""

from benchmark.errors import command, start_command

main = command("benchmark.report.build")

if __name__ == "__main__":
    start_command(main)
