"""``python -m benchmark.finetune``: the command line of :mod:`benchmark.stages.finetune`."""

from benchmark.errors import command, start_command

main = command("benchmark.stages.finetune")

if __name__ == "__main__":
    start_command(main)
