#!/usr/bin/env bash
# Rebuild the shipped model from scratch (CPU, ~45 min on 2 cores; every step resumable):
#   bash training/reproduce_shipped.sh [out.pt]
# Dependencies first (the KD teacher is the lab's fine-tuned Lite2; lite0_ft is a candidate),
# then the frozen-prefix caches, the SSL / joint / KD / control runs, the selection of the best
# <= 5M-parameter run, and the open-set calibration of the result. Heavy steps take the shared
# CPU lock one at a time. Numbers: results/RESULTS.md and model/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-model/efficientnet_lite0_imagewoof.pt}
PY=${PYTHON:-.venv/bin/python}
LOCK=${BREED_CPU_LOCK:-/tmp/breedrec-cpu.lock}
run() { echo "== $*"; flock "$LOCK" "$PY" -m "$@"; }
for lab in lite0_ft lite2_ft; do
  [ -f "runs/$lab/metrics.json" ] || run training.train --config "training/configs/$lab.yaml" --resume
done
run training.tail --what val train pairs
run training.distill --lab-teacher lite2_ft  # reads the lab run's cache
for cfg in kd_lite0_ce kd_lite0 kd_lite0_ce_long kd_lite0_long ssl_bt_lite0_ft; do
  [ "$cfg" = ssl_bt_lite0_ft ] && run training.ssl --config training/configs/ssl_bt_lite0.yaml
  run training.distill --config "training/configs/$cfg.yaml"
done
run training.joint --config training/configs/joint_bt_lite0.yaml
run training.ship --runs kd_lite0_long kd_lite0 kd_lite0_ce_long kd_lite0_ce ssl_bt_lite0_ft \
  joint_bt_lite0 lite0_ft --out "$OUT"
run training.open_set --artifact "$OUT" --write --max-train 2000
run training.results
