"""``python -m benchmark.tokenizers``: the command line of :mod:`benchmark.methods.tokenizers`."""

from benchmark.errors import command, start_command

main = command("benchmark.methods.tokenizers")

if __name__ == "__main__":
    start_command(main)
