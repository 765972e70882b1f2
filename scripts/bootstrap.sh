#!/usr/bin/env bash
# The project-local virtual environment .venv with the whole stack.
#
#   source scripts/bootstrap.sh   installs what is missing (once), then activates .venv
#   bash scripts/bootstrap.sh     installs what is missing, nothing else
#
# A second run costs one file read: the stamp .venv/.sslbench-installed holds a fingerprint of
# pyproject.toml, constraints.txt, this script and mmcv_build.sh; a change to any of them
# re-runs the stages, and pip skips what is already satisfied.
#
# Why the stages are ordered as they are:
#   1. setuptools 77-80 (pinned for every stage through constraints.txt): mmcv's setup.py and
#      mmengine's `mmdet::` config inheritance import pkg_resources, gone from setuptools >= 81.
#   2. torch 2.13.0 + torchvision 0.28.0 from the package index. torchvision's compiled ops link
#      against the index's (CUDA-enabled, CPU-capable) torch; a local `+cpu` torch wheel offered
#      through a machine-wide pip find-links would break `import torchvision`, so pip's
#      machine-wide configuration is not used here.
#   3. mmcv 2.1.0 compiled from source with its C++ ops (no binary wheel exists for torch 2.13;
#      mmdet 3.3.0 and mmseg 1.2.2 refuse mmcv >= 2.2), without build isolation so that it
#      compiles against the torch of stage 2. About 10 minutes on 2 cores, then cached by pip.
#   4. the project (editable) with its remaining dependencies from pyproject.toml.
#   Then the data the main job reads: Debian's dataset-fashion-mnist, installed with apt-get as
#   root or with passwordless sudo; where neither is possible it says so and goes on (the files can
#   be placed under the data root instead).

_sslbench_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_sslbench_venv="${SSLBENCH_VENV:-$_sslbench_root/.venv}"
_sslbench_stamp="$_sslbench_venv/.sslbench-installed"
_sslbench_fingerprint() {
  cat "$_sslbench_root"/{pyproject.toml,constraints.txt,scripts/bootstrap.sh,scripts/mmcv_build.sh} | sha256sum | cut -c1-16
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: install in a child process (so `set -e` there really stops), then activate here.
  if [[ ! -f "$_sslbench_stamp" || "$(cat "$_sslbench_stamp")" != "$(_sslbench_fingerprint)" ]]; then
    bash "$_sslbench_root/scripts/bootstrap.sh" || return 1
  fi
  # shellcheck disable=SC1091
  source "$_sslbench_venv/bin/activate"
  return 0
fi

set -euo pipefail
say() { printf '[setup] %s\n' "$*" >&2; }
python="${PYTHON:-python3}"
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
unset PIP_FIND_LINKS PIP_REQUIRE_VIRTUALENV PIP_NO_INDEX
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_CONSTRAINT="$_sslbench_root/constraints.txt"
pip=(python -m pip install --progress-bar off)

say "stage 1/4: build tools"
"${pip[@]}" -q setuptools wheel ninja numpy

say "stage 2/4: torch 2.13.0 + torchvision 0.28.0 (about 5 GB with their CUDA libraries)"
"${pip[@]}" torch torchvision
if ! python -c 'import torch, torchvision.ops' 2>/dev/null; then
  say "error: torch and torchvision do not import together (a '+cpu' torch build?); delete $_sslbench_venv and run again"
  exit 1
fi

say "stage 3/4: mmcv 2.1.0 with compiled ops (about 10 minutes on 2 cores the first time)"
"${pip[@]}" -q mmengine
# Its CUDA ops too where a GPU and a CUDA compiler are present (for this GPU's architecture); else
# the CPU ops, and on a GPU the dense runs use torchvision's RoIAlign and NMS instead
# (benchmark/downstream/mm/ops.py).
# shellcheck disable=SC1091
source "$_sslbench_root/scripts/mmcv_build.sh"
if python -c 'import sys; from mmcv.ops import get_compiling_cuda_version as v; sys.exit(v() in ("", "not available"))' 2>/dev/null; then
  say "mmcv's CUDA ops are installed"
else
  mmcv_build mmcv auto "${pip[@]}"
fi

say "stage 4/4: the project and its remaining dependencies"
"${pip[@]}" -q -e "$_sslbench_root[test]"

say "data: Fashion-MNIST (Debian's dataset-fashion-mnist, the main job's images)"
fashion_dir=/usr/share/datasets/fashion-mnist
if [[ -f "$fashion_dir/train-images-idx3-ubyte.gz" ]]; then
  :
elif ! command -v apt-get >/dev/null; then
  say "not installed: this system has no apt-get; place the official Fashion-MNIST idx files in DATA_ROOT/fashion-mnist (docs/datasets.md)"
else
  if [[ "$(id -u)" == 0 ]]; then as_root=(); elif sudo -n true 2>/dev/null; then as_root=(sudo -n); else as_root=(none); fi
  if [[ "${as_root[*]-}" == none ]]; then
    say "not installed: installing it needs root; run 'sudo apt-get install dataset-fashion-mnist' once, or place the official idx files in DATA_ROOT/fashion-mnist"
  elif ! { "${as_root[@]}" apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
           { "${as_root[@]}" apt-get update -qq >/dev/null 2>&1 &&
             "${as_root[@]}" apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; }; then
    say "not installed: apt-get install dataset-fashion-mnist failed (no such package on this release?); place the official idx files in DATA_ROOT/fashion-mnist"
  else
    say "installed $fashion_dir"
  fi
fi

if ! python -c 'import torch, torchvision.ops, timm, mmcv.ops, mmdet, mmseg' ; then
  say "error: the stack does not import; run '$_sslbench_venv/bin/python -m benchmark doctor' for details"
  exit 1
fi
_sslbench_fingerprint > "$_sslbench_stamp"
say "environment ready: $_sslbench_venv"
