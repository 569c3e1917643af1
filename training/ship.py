"""Pick the best small run and turn it into the shipped artifact, evaluated as served.

    python -m training.ship --runs kd_lite0 kd_lite0_ce lite0_ft \
        --out model/efficientnet_lite0_imagewoof.pt

Among ``runs/<name>/metrics.json`` with at most ``--max-params`` parameters, the highest val
top-1 wins (ties: the earlier name; all candidates here are the same Lite0 network, so CPU speed
cannot separate them). Its ``model.pt`` is copied to ``--out`` with a release name/version, then
evaluated on the whole val split through the service runtime (``training.evaluate``: per-class
accuracy, confusion matrix and mistakes PNGs) and timed at batch 1 on this CPU; the numbers go
into the artifact's metadata and ``<report>/ship.json``. The open-set rule is calibrated after
this by ``python -m training.open_set --artifact <out> --write``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
from pathlib import Path

from model.backends import load_backend
from training.artifact_metadata import rewrite_metadata
from training.data import load_split
from training.engine import VAL_CAVEAT, hardware, runs_dir
from training.evaluate import evaluate_artifact
from training.results import measure_speed

log = logging.getLogger(__name__)
RELEASE_NAME = "tf_efficientnet_lite0-imagewoof"


def select(runs: list[str], max_params_m: float) -> tuple[str, dict[str, float]]:
    """(winning run, {run: val top-1}) among finished runs small enough to ship."""
    scores: dict[str, float] = {}
    for name in runs:
        path = runs_dir() / name / "metrics.json"
        if not path.is_file():
            log.warning("run %s has no metrics.json: skipped", name)
            continue
        metrics = json.loads(path.read_text())
        if metrics.get("params_m", 1e9) <= max_params_m and "top1" in metrics:
            scores[name] = float(metrics["top1"])
    if not scores:
        raise ValueError(f"none of {runs} is finished with <= {max_params_m}M parameters")
    best = max(scores, key=lambda n: (scores[n], -runs.index(n)))
    return best, scores


def ship(
    runs: list[str],
    out: Path,
    version: str = "1.0.0",
    max_params_m: float = 5.0,
    report: Path | None = None,
    data_root: Path | None = None,
    quick: bool = False,
) -> dict:
    report = report or runs_dir() / "ship"
    best, scores = select(runs, max_params_m)
    log.info("candidates (val top-1): %s -> %s", scores, best)
    source = runs_dir() / best / "model.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out)
    meta = load_backend(out, threads=1).metadata
    extra = {**meta.extra, "run": best, "selected_from_val_top1": scores}
    rewrite_metadata(
        out, dataclasses.replace(meta, name=RELEASE_NAME, version=version, extra=extra)
    )
    if quick:  # the run's own val numbers (same network; see training.tail.evaluate_cached)
        result = json.loads((runs_dir() / best / "metrics.json").read_text())
    else:
        result = evaluate_artifact(out, load_split(data_root, "val"), report)
    latency = {f"{t}_thread": measure_speed(out, t, batch_runs=1)["latency_ms"] for t in (1, 2)}
    meta = load_backend(out, threads=1).metadata
    metrics = {
        "split": "val",
        "n_images": result["n_images"],
        "top1": result["top1"],
        "top5": result["top5"],
        "per_class_top1": result["per_class_top1"],
        "caveat": VAL_CAVEAT,
        "eval": result.get("eval", "whole val split through the service runtime"),
        "cpu_latency_ms_batch1": latency,
        "latency_hardware": hardware(),
    }
    rewrite_metadata(out, dataclasses.replace(meta, metrics=metrics))
    summary = {
        "run": best,
        "candidates": scores,
        "artifact": str(out),
        "size_mb": round(out.stat().st_size / 1e6, 2),
        **metrics,
        "confusion": result.get("confusion"),
    }
    report.mkdir(parents=True, exist_ok=True)
    (report / "ship.json").write_text(json.dumps(summary, indent=2))
    log.info("shipped %s: val top-1 %.4f, latency %s ms", best, result["top1"], latency)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ship the best small run as the artifact.")
    parser.add_argument("--runs", nargs="+", required=True, help="run names under runs/")
    parser.add_argument("--out", type=Path, required=True, help="artifact path (.pt)")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--max-params", type=float, default=5.0, help="millions")
    parser.add_argument("--report", type=Path, default=None, help="default runs/ship")
    parser.add_argument("--data", type=Path, default=None, help="data root (default shared)")
    parser.add_argument(
        "--quick", action="store_true", help="reuse the run's val numbers (no second val pass)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        ship(args.runs, args.out, args.version, args.max_params, args.report, args.data, args.quick)
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"ship failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"note: {VAL_CAVEAT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
