#!/usr/bin/env bash
# The test suite (what CI runs): the lint (ruff, configured in pyproject.toml), then pytest.
# Sets up the project's .venv on first use.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k splitmask -x
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck disable=SC1091
source scripts/bootstrap.sh
python -m benchmark doctor
ruff check .
exec python -m pytest -q -ra "$@"
