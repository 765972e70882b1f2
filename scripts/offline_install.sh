#!/usr/bin/env bash
# Installs a kit of scripts/offline_kit.sh on a machine that reaches no package index, into
# TARGET_DIR, for the `python3` there (its own torch, timm, numpy ...):
#
#   bash scripts/offline_install.sh KIT_DIR TARGET_DIR [cpu|auto|none]
#   export PYTHONPATH=TARGET_DIR:$PYTHONPATH
#
# The wheels are unpacked as they are; mmcv is compiled from its source against that machine's
# torch: "cpu" (the default) its CPU ops only (about 10 minutes on 2 idle cores), with which the
# dense runs use torchvision's RoIAlign and NMS on a GPU; "auto" its CUDA ops too where a GPU and
# nvcc are present (many minutes); "none" no op at all (seconds: for a GPU held by the minute),
# scripts/mmcv_ext_stub.py in place of the compiled module, whose every op raises when called:
# on a GPU the dense runs call none, they use torchvision's. Then the stack must import, and
# `python3 -m benchmark doctor` says whether RoIAlign and NMS run on the GPU.
set -euo pipefail
say() { printf '[offline-install] %s\n' "$*" >&2; }
[[ $# -ge 2 && $# -le 3 ]] || { say "usage: bash scripts/offline_install.sh KIT_DIR TARGET_DIR [cpu|auto|none]"; exit 2; }
kit=$1 target=$2 ops=${3:-cpu}
[[ "$ops" == cpu || "$ops" == auto || "$ops" == none ]] ||
  { say "error: the ops to build are 'cpu', 'auto' or 'none', not '$ops'"; exit 2; }
shopt -s nullglob
wheels=("$kit"/*.whl) sources=("$kit"/mmcv-*.tar.gz)
[[ ${#wheels[@]} -gt 0 && ${#sources[@]} -eq 1 ]] ||
  { say "error: $kit holds no kit of scripts/offline_kit.sh (its wheels and one mmcv-*.tar.gz)"; exit 2; }
python() { python3 "$@"; }  # mmcv_build.sh calls `python`: the machine's python3

export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1
pip=(python3 -m pip install -q --no-deps --no-compile --no-cache-dir --target "$target")
started=$SECONDS
"${pip[@]}" --upgrade "${wheels[@]}"
say "${#wheels[@]} wheels in $target ($((SECONDS - started)) s)"
# The build imports setuptools (< 81, for pkg_resources) from the kit, and torch from the machine.
export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$ops" == none ]]; then
  started=$SECONDS
  MMCV_WITH_OPS=0 "${pip[@]}" --no-build-isolation "${sources[0]}"
  cp "$(dirname "${BASH_SOURCE[0]}")/mmcv_ext_stub.py" "$target/mmcv/_ext.py"
  say "mmcv without compiled ops in $((SECONDS - started)) s (the dense runs use torchvision's RoIAlign and NMS)"
else
  # shellcheck disable=SC1091
  source "$(dirname "${BASH_SOURCE[0]}")/mmcv_build.sh"
  mmcv_build "${sources[0]}" "$ops" "${pip[@]}"
fi
python3 -c 'import torch, mmcv.ops, mmdet, mmseg; print(f"[offline-install] torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__} import")' >&2
say "ready: export PYTHONPATH=$target:\$PYTHONPATH"
