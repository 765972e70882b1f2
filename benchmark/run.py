"""``python -m benchmark.run``: the command line of :mod:`benchmark.driver.run`."""

from benchmark.errors import command, start_command

main = command("benchmark.driver.run")

if __name__ == "__main__":
    start_command(main)
