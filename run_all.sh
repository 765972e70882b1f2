#!/usr/bin/env bash
# The main job: runs the experiments of the paper's artifacts and rebuilds tables/, plots/ and
# REPORT.md. Sets up the project's .venv on first use.
#
#   ./run_all.sh                      the default subset (mini: the paper in miniature on Fashion-MNIST)
#   ./run_all.sh --subset smoke       the whole chain on synthetic data in the real formats (~4 min)
#   ./run_all.sh --dry-run            print the plan: every run, whether it is done, its GPU-hours
#   ./run_all.sh --subset fig2 --scale paper --data-root /datasets [--launcher torchrun|slurm]
#   ./run_all.sh --help               all options (python -m benchmark.run --help)
set -euo pipefail
cd "$(dirname "$0")"
for arg in "$@"; do
  if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
    # Help needs none of the stack: it is printed before (and without) the installation.
    exec "${PYTHON:-python3}" -m benchmark.run --help
  fi
done
# shellcheck disable=SC1091
source scripts/bootstrap.sh
exec python -m benchmark.run "$@"
