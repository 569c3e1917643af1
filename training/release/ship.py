"""Turn the best small run into the shipped artifact, chosen by a rule fixed before the runs.

    python -m training.release.ship --runs kd_lite0 kd_lite0_ce lite0_ft \
        --out model/efficientnet_lite0_imagewoof.pt

Selection rule (written down before any run of the rebuilt lab; ``val`` plays no part):

1. Candidates: the named runs that finished with at most ``--max-params`` million parameters
   (the served network, frozen ImageNet head included) and were evaluated on ``unseen`` and
   ``web``.
2. Score = mean of ``unseen`` top-1 and ``web`` top-1.
3. The highest score wins. Scores within ``TIE`` of the best are a tie, broken by the lower
   batch-1 CPU latency of the architecture (measured now; the same architecture is the same
   network, so same speed), then by the earlier name in ``--runs``.
4. The winner ships only if its static-int8 copy passes ``training.release.quantize``'s acceptance
   check; otherwise nothing ships (``training/release/reproduce_shipped.sh`` stages the release).

The winner's ``model.pt`` is copied to ``--out`` with the release name and version, keeping
its open-set rule; its honest figures (cached outputs: no second pass) go into the artifact's
metadata and ``runs/ship/ship.json``. ``python -m training.release.open_set --write``
recalibrates the rule afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from model.backends import load_backend
from training.lab.data import load_split
from training.lab.distributed import hardware
from training.lab.evaluate import SPLITS, VAL_CAVEAT, evaluate_artifact
from training.lab.paths import run_dir
from training.lab.speed import measure_speed
from training.release.artifact_metadata import rewrite_metadata

log = logging.getLogger(__name__)
RELEASE_NAME = "tf_efficientnet_lite0-imagewoof"
TIE = 0.001  # 0.1 point of the mean


def candidates(runs: list[str], max_params_m: float) -> dict[str, dict[str, Any]]:
    found = {}
    for name in runs:
        path = run_dir(name) / "metrics.json"
        if not path.is_file():
            log.warning("run %s has no metrics.json: not a candidate", name)
            continue
        metrics = json.loads(path.read_text())
        splits = metrics.get("splits", {})
        if metrics["params_m"] <= max_params_m and {"unseen", "web"} <= set(splits):
            found[name] = metrics
    if not found:
        raise ValueError(f"none of {runs} is finished, evaluated and <= {max_params_m}M params")
    return found


def select(runs: list[str], max_params_m: float) -> tuple[str, dict[str, float]]:
    """(winner, {run: score}) by the rule in the module docstring."""
    found = candidates(runs, max_params_m)
    scores = {
        name: (m["splits"]["unseen"]["top1"] + m["splits"]["web"]["top1"]) / 2
        for name, m in found.items()
    }
    best = max(scores.values())
    tied = [name for name in runs if name in scores and scores[name] >= best - TIE]
    latency: dict[str, float] = {}
    for name in tied:
        arch = found[name]["arch"]
        if arch not in latency:
            latency[arch] = measure_speed(run_dir(name) / "model.pt", 2, batch_runs=1)["latency_ms"]
    winner = min(tied, key=lambda n: (latency[found[n]["arch"]], runs.index(n)))
    return winner, scores


def ship(runs: list[str], out: Path, version: str = "1.0.0", max_params_m: float = 5.0) -> dict:
    best, scores = select(runs, max_params_m)
    log.info("scores (mean of unseen and web top-1): %s -> %s", scores, best)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir(best) / "model.pt", out)
    meta = load_backend(out, threads=1).metadata
    result = evaluate_artifact(out, {s: load_split(None, s) for s in SPLITS})
    summary = {
        s: {k: m[k] for k in ("n", "top1", "top1_ci95", "served", "refused")}
        for s, m in result.items()
    }
    latency = {f"{t}_thread": measure_speed(out, t, batch_runs=1)["latency_ms"] for t in (1, 2)}
    metrics = {
        **summary,
        "caveat": VAL_CAVEAT,
        "cpu_latency_ms_batch1": latency,
        "latency_hardware": hardware(),
    }
    extra = {**meta.extra, "run": best, "selection_scores": scores}
    rewrite_metadata(
        out,
        dataclasses.replace(meta, name=RELEASE_NAME, version=version, extra=extra, metrics=metrics),
    )
    report = {
        "run": best,
        "scores": scores,
        "artifact": str(out),
        "size_mb": round(out.stat().st_size / 1e6, 2),
        **metrics,
    }
    (run_dir("ship")).mkdir(parents=True, exist_ok=True)
    (run_dir("ship") / "ship.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ship the best small run as the artifact.")
    parser.add_argument("--runs", nargs="+", required=True, help="run names under runs/")
    parser.add_argument("--out", type=Path, required=True, help="artifact path (.pt)")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--max-params", type=float, default=5.0, help="millions")
    parser.add_argument("--dry-run", action="store_true", help="only print the selection")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.dry_run:
            best, scores = select(args.runs, args.max_params)
            print(json.dumps({"winner": best, "scores": scores}, indent=2))
            return 0
        report = ship(args.runs, args.out, args.version, args.max_params)
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"ship failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    u, w = report["unseen"], report["web"]
    print(
        f"shipped {report['run']} -> {args.out}: unseen {u['top1']:.1%} {u['top1_ci95']}, "
        f"web {w['top1']:.1%} {w['top1_ci95']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
