#!/usr/bin/env bash
# Rerun the lab and build the next release, one step at a time under the CPU lock:
#   bash training/release/reproduce_shipped.sh [out.pt]
# Resumable: a finished run (runs/<name>/metrics.json) is skipped, an interrupted one continues
# from its checkpoint, caches resume by chunk; every step shows tqdm progress. Training holds
# the lock for at most ~$HOLD_MINUTES minutes at a time (then pauses and queues again).
# Order: zero-shot, the KD teacher (lite2_ft), the candidates, the selection by the rule in
# training/release/ship.py (unseen + web, never val), the open-set calibration, the looks_like
# calibration (another breed, a wild canid or a cat named; training.release.looks_like), the deployment prior
# (training.release.prior, cross-fitted), the static-int8 ONNX the service serves (training.release.quantize:
# refused unless its served answers are not worse than fp32's, and then nothing ships), the results table.
set -euo pipefail
cd "$(dirname "$0")/../.."
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
# The release is built and checked in $STAGE; the shipped files and their reports are replaced
# together, and only once training.release.quantize has accepted the static-int8 copy the service serves.
STAGE="$RUNS/ship/release"
NAME=$(basename "$OUT" .pt)
rm -rf "$STAGE" && mkdir -p "$STAGE"
# shellcheck disable=SC2086
locked training.release.ship --runs $CANDIDATES --out "$STAGE/$NAME.pt" --version 1.2.0
locked training.release.open_set --artifact "$STAGE/$NAME.pt" --write --max-train 2000 \
  --out-dir "$STAGE/open_set"
locked training.release.looks_like --artifact "$STAGE/$NAME.pt" --write
locked training.release.prior --artifact "$STAGE/$NAME.pt" --favour Beagle --over "English foxhound" \
  --write --report "$STAGE/prior.md"
locked training.release.onnx_export "$STAGE/$NAME.pt" "$STAGE/$NAME.onnx"
locked training.release.quantize "$STAGE/$NAME.pt" --out "$STAGE/$NAME.int8.onnx" \
  --report "$STAGE/int8.json" || {
  echo "== not shipped: training.release.quantize did not accept the int8 copy; shipped files unchanged" >&2
  exit 1
}
cp "$STAGE/$NAME.pt" "$OUT"
cp "$STAGE/$NAME.onnx" "${OUT%.pt}.onnx"
cp "$STAGE/$NAME.int8.onnx" "${OUT%.pt}.int8.onnx"
cp "$STAGE/open_set/$NAME".* results/open_set/
cp "$STAGE/prior.md" results/prior.md
cp "$STAGE/int8.json" results/bench/int8.json
locked training.reports.results
locked training.reports.looks_like
