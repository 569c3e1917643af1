#!/usr/bin/env bash
# Rebuild everything that led to the shipped model, one step at a time under the CPU lock:
#   bash training/reproduce_shipped.sh [out.pt]
# Resumable: a finished run (runs/<name>/metrics.json) is skipped, an interrupted one continues
# from its checkpoint, caches resume by chunk; every step shows tqdm progress. Training holds
# the lock for at most ~$HOLD_MINUTES minutes at a time (then pauses and queues again).
# Order: zero-shot, the KD teacher (lite2_ft), the candidates, the selection by the rule in
# training/ship.py (unseen + web, never val), the open-set calibration, the deployment prior
# (training.prior, cross-fitted), the static-int8 ONNX the service serves (model.quantize:
# refused unless it matches fp32), the results table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-model/efficientnet_lite0_imagewoof.pt}
PY=${PYTHON:-.venv/bin/python}
LOCK=${BREED_CPU_LOCK:-/tmp/breedrec-cpu.lock}
HOLD_MINUTES=${HOLD_MINUTES:-8}
RUNS=${BREED_RUNS_DIR:-runs}
locked() { echo "== $*"; flock "$LOCK" "$PY" -m "$@"; }
train() {
  until [ -f "$RUNS/$1/metrics.json" ]; do
    locked training.train --config "training/configs/$1.yaml" --resume --max-minutes "$HOLD_MINUTES"
  done
}
CANDIDATES="zeroshot_lite0 kd_lite0 kd_lite0_ce joint_bt_lite0 ssl_bt_lite0_ft kd_lite0_long kd_lite0_ce_long lite0_ft"
for run in lite2_ft lite1_ft ssl_bt_lite0 $CANDIDATES; do train "$run"; done
# shellcheck disable=SC2086
locked training.ship --runs $CANDIDATES --out "$OUT" --version 1.1.0
locked training.open_set --artifact "$OUT" --write --max-train 2000
locked training.prior --artifact "$OUT" --favour Beagle --over "English foxhound" --write
locked model.quantize "$OUT" --out "${OUT%.pt}.int8.onnx" --report results/bench/int8.json
locked training.results
