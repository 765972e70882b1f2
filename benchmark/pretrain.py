"""``python -m benchmark.pretrain``: the command line of :mod:`benchmark.stages.pretrain`."""

from benchmark.errors import command, start_command

main = command("benchmark.stages.pretrain")

if __name__ == "__main__":
    start_command(main)
