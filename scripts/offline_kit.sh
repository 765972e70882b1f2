#!/usr/bin/env bash
# The detection and segmentation stack for a GPU machine that reaches no package index (an
# air-gapped cluster node, a lent machine), as files to carry there:
#
#   bash scripts/offline_kit.sh KIT_DIR [PYTHON_VERSION]     here, with .venv set up
#   bash scripts/offline_install.sh KIT_DIR TARGET_DIR        there
#
# KIT_DIR receives the wheels of mmengine, mmdet, mmsegmentation and the small packages they need
# that a machine with torch, numpy, scipy, matplotlib, opencv and pandas usually lacks, at the
# versions this .venv runs (what the tests passed with), built for PYTHON_VERSION (default: this
# Python's; e.g. 3.12) on x86-64 Linux, and mmcv's source, which offline_install.sh compiles there
# against that machine's own torch. About 11 MB.
set -euo pipefail
say() { printf '[offline-kit] %s\n' "$*" >&2; }
[[ $# -ge 1 && $# -le 2 ]] || { say "usage: bash scripts/offline_kit.sh KIT_DIR [PYTHON_VERSION]"; exit 2; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kit=$1
python="$root/.venv/bin/python"
[[ -x "$python" ]] || { say "error: $root/.venv is not set up; run 'bash scripts/bootstrap.sh' first"; exit 2; }
version="${2:-$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
[[ "$version" =~ ^3\.[0-9]+$ ]] || { say "error: PYTHON_VERSION should read like 3.12, not '$version'"; exit 2; }

# The packages, each at the version installed here (pkg_resources: mmengine's config inheritance
# needs setuptools < 81; ftfy: mmseg imports it undeclared; dall-e: BEiT's dVAE tokenizer).
names=(mmengine mmdet mmsegmentation pycocotools shapely terminaltables addict yapf termcolor prettytable
       wcwidth platformdirs setuptools ftfy dall-e)
mapfile -t pins < <("$python" -c '
import sys
from importlib.metadata import version
for name in sys.argv[1:]:
    print(f"{name}=={version(name)}")' "${names[@]}")
mmcv="mmcv==$("$python" -c 'from importlib.metadata import version; print(version("mmcv"))')"

mkdir -p "$kit"
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_NO_INDEX PIP_CONSTRAINT
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$tag")
done
say "wheels for Python $version: ${pins[*]}"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
  "${platforms[@]}" -d "$kit" "${pins[@]}"
say "mmcv's source: $mmcv"
"$python" -m pip download -q --no-deps --no-binary=:all: -d "$kit" "$mmcv"
say "$(du -sh "$kit" | cut -f1) in $kit; there: bash scripts/offline_install.sh $kit TARGET_DIR"
