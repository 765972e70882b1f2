#!/usr/bin/env bash
# Creates (once) the project-local virtual environment .venv with the whole stack and
# activates it. Sourced by run_all.sh and run_tests.sh. A second run costs one file read:
# the stamp file records a fingerprint of pyproject.toml and this script, and any change to
# either re-runs the stages (pip then skips what is already satisfied).
#
# Why the stages are ordered as they are:
#   1. setuptools<70: mmcv's setup.py and mmengine's `mmdet::` config inheritance import
#      pkg_resources, which setuptools >= 81 no longer ships.
#   2. torch 2.13.0 + torchvision 0.28.0 from the package index. torchvision's compiled ops
#      link against the index's (CUDA-enabled, CPU-capable) torch build; a local `+cpu` torch
#      wheel offered through pip's find-links would break `import torchvision`, so pip's
#      machine-wide find-links are ignored here.
#   3. mmcv 2.1.0 compiled from source with its C++ ops (no binary wheel exists for torch
#      2.13; mmdet 3.3.0 and mmseg 1.2.2 refuse mmcv >= 2.2), without build isolation so it
#      compiles against the torch of step 2. About 10 minutes on 2 cores, then cached by pip.
#   4. the project (editable) with its remaining pinned dependencies from pyproject.toml.
# Sourced scripts must not leak `set -e` into the caller; everything runs in a subshell.

_sslbench_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_sslbench_venv="${SSLBENCH_VENV:-$_sslbench_root/.venv}"

_sslbench_fingerprint() {
  cat "$_sslbench_root/pyproject.toml" "$_sslbench_root/scripts/bootstrap.sh" | sha256sum | cut -c1-16
}

_sslbench_install() (
  set -euo pipefail
  say() { printf '[setup] %s\n' "$*" >&2; }
  local python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))' 2>/dev/null; then
    say "error: '$python' is missing or older than Python 3.10; set PYTHON=/path/to/python3.11"
    exit 1
  fi
  if [[ ! -x "$_sslbench_venv/bin/python" ]]; then
    say "creating the virtual environment $_sslbench_venv"
    "$python" -m venv "$_sslbench_venv"
  fi
  # shellcheck disable=SC1091
  source "$_sslbench_venv/bin/activate"
  unset PIP_FIND_LINKS PIP_REQUIRE_VIRTUALENV
  export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
  local pip=(python -m pip install --progress-bar off)

  say "stage 1/4: build tools"
  "${pip[@]}" -q "setuptools<70" wheel ninja "numpy>=2.2,<2.3"

  say "stage 2/4: torch 2.13.0 + torchvision 0.28.0 (about 5 GB with their CUDA libraries)"
  "${pip[@]}" "torch==2.13.0" "torchvision==0.28.0"
  if ! python -c 'import torch, torchvision.ops' 2>/dev/null; then
    say "error: torch and torchvision do not import together (a '+cpu' torch build?); delete $_sslbench_venv and run again"
    exit 1
  fi

  say "stage 3/4: mmcv 2.1.0 with compiled ops (about 10 minutes on 2 cores the first time)"
  "${pip[@]}" "mmengine==0.10.7" opencv-python-headless
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "${pip[@]}" --no-build-isolation "mmcv==2.1.0"

  say "stage 4/4: the project and its remaining dependencies"
  "${pip[@]}" -e "$_sslbench_root[test]"

  python -c 'import torch, torchvision.ops, timm, mmcv.ops, mmdet, mmseg' || {
    say "error: the stack does not import; run '.venv/bin/python -m benchmark doctor' for details"
    exit 1
  }
  _sslbench_fingerprint > "$_sslbench_venv/.sslbench-installed"
  say "environment ready: $_sslbench_venv"
)

if [[ ! -f "$_sslbench_venv/.sslbench-installed" \
      || "$(cat "$_sslbench_venv/.sslbench-installed")" != "$(_sslbench_fingerprint)" ]]; then
  _sslbench_install || return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$_sslbench_venv/bin/activate"
