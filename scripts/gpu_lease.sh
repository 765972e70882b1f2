#!/usr/bin/env bash
# What the suite still has to run on a GPU, as one command for a GPU machine that reaches no
# package index and is held for minutes: the repository there with the kit of offline_kit.sh in
# .kit/ and the Fashion-MNIST idx files in data/fashion-mnist/, and that machine's own python3
# (torch, timm, numpy, pandas, matplotlib). Runs from the repository's root:
#
#   bash scripts/gpu_lease.sh OUT_DIR DEADLINE_S PART...
#
#   install     the kit into /tmp/sslbench-site, in seconds: mmcv without its compiled ops, whose
#               compilation would take minutes of the lease (on the GPU the dense runs use
#               torchvision's RoIAlign and NMS), then `benchmark doctor` (OUT_DIR/setup.log)
#   chain       scripts/gpu_check.py's chain: the smoke plan through the driver under torchrun,
#               conversion, Mask R-CNN, UperNet, fine-tuning, the report (OUT_DIR/gpu_check.json)
#   perf-paper  the paper's ViT-B/16 steps against each method's data path (OUT_DIR/perf_gpu.csv)
#   SUBSET      any other word: `benchmark.run --subset SUBSET --scale mini-gpu` into runs/ (kept
#               between calls on a machine held warm: killed runs resume), e.g. mini, mini_seeds
#
# Parts run in the order given; each stops at the deadline (DEADLINE_S seconds after the start,
# by SIGTERM: the runs write their checkpoints; leave a minute's margin under the machine's own
# limit), and the parts after it are skipped. At the end the records of every finished run of
# runs/ go to OUT_DIR/records.tgz (unpack it into records/ here, then `python -m benchmark.report`).
# Exit code 1 if a part failed or ran out of time.
set -uo pipefail
[[ $# -ge 3 ]] || { echo "usage: bash scripts/gpu_lease.sh OUT_DIR DEADLINE_S PART..." >&2; exit 2; }
out=$1 deadline=$(( SECONDS + $2 ))
shift 2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
site=/tmp/sslbench-site
[[ -d "$site" ]] && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
say() { printf '[gpu-lease %4d s] %s\n' "$SECONDS" "$*" | tee -a "$out/lease.log" >&2; }
left() { echo $(( deadline - SECONDS )); }
failed=0

for part in "$@"; do
  if (( $(left) < 10 )); then say "deadline: $part and what follows not run"; failed=1; break; fi
  say "$part ($(left) s left)"
  case "$part" in
    install)
      { bash scripts/offline_install.sh .kit "$site" none && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" &&
        { python3 -m benchmark doctor || true; }; } >> "$out/setup.log" 2>&1 || failed=1 ;;
    chain)
      timeout -s TERM -k 45 "$(left)" python3 scripts/gpu_check.py /tmp/sslbench-check --methods splitmask --skip-resume \
        >> "$out/lease.log" 2>&1 || failed=1
      cp /tmp/sslbench-check/gpu_check.json "$out/" 2>/dev/null ;;
    perf-paper)
      timeout -s TERM -k 45 "$(left)" python3 -m benchmark.perf --parts steps pipeline --archs vit-b16 --out "$out/perf_gpu.csv" \
        --plot /tmp/sslbench-perf.png >> "$out/lease.log" 2>&1 || failed=1 ;;
    *)
      timeout -s TERM -k 45 "$(left)" python3 -m benchmark.run --subset "$part" --scale mini-gpu --no-report \
        >> "$out/lease.log" 2>&1 || failed=1 ;;
  esac
done

rm -rf /tmp/sslbench-records && mkdir -p /tmp/sslbench-records
if python3 scripts/gpu_miniature.py /tmp/sslbench-records --parts records >> "$out/lease.log" 2>&1 &&
   [[ -d /tmp/sslbench-records/records ]]; then
  tar czf "$out/records.tgz" -C /tmp/sslbench-records records
  say "records of $(find /tmp/sslbench-records/records -name run.json | wc -l) finished runs in $out/records.tgz"
else
  say "no finished run to keep (runs/ holds none, or copying them failed: see lease.log)"
fi
say "done, $( (( failed )) && echo 'a part failed or ran out of time' || echo 'every part ended' )"
exit "$failed"
