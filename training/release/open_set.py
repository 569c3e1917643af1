"""Lab command: measure "not one of my breeds" scorers on an artifact and calibrate its rule.

    python -m training.release.open_set --artifact model/efficientnet_lite0_imagewoof.pt [--write]

For every candidate scorer (``model.open_set.SCORERS`` with a small parameter grid fixed in
advance) it computes scores on Imagewoof train, Imagewoof val, ood/cats and ood/dogs, and
sets the threshold by a rule fixed in advance: the ``--target-val-refusal`` quantile of the
TRAIN scores (never the OOD pass rate). The method is chosen by measurement on one half of
the OOD breeds (the "selection" half; the other half is reported as held out): highest mean
of cats-refused and dogs-refused at that threshold, AUROC(train vs OOD) as tie-break.
``--threshold-from val-crossfit`` is for models fine-tuned on train (inflated train scores):
val quantile, with val figures measured 2-fold cross-fitted. ``--write`` stores the rule and
its figures in the artifact's metadata in place, leaving the weights untouched (verified).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from model.backends import ArtifactError, load_backend
from model.metadata import OpenSetRule
from training.lab.evaluate import model_outputs
from training.lab.paths import REPO_ROOT, data_root
from training.release.artifact_metadata import rewrite_metadata
from training.release.open_set_data import load_sets
from training.release.open_set_scoring import (
    THRESHOLD_SOURCES,
    Evaluation,
    candidates_for,
    choose,
    evaluate,
    metrics_entry,
    targets_missed,
)
from training.reports.open_set_report import markdown_report, pct, plot, print_table

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, required=True, help=".pt or .onnx artifact")
    parser.add_argument("--write", action="store_true", help="store the rule in the artifact")
    parser.add_argument("--method", default=None, help="evaluate only this scorer")
    parser.add_argument("--target-val-refusal", type=float, default=0.02)
    parser.add_argument(
        "--threshold-from",
        choices=THRESHOLD_SOURCES,
        default="train",
        help="train: quantile of train scores (default); val-crossfit: quantile of val scores, "
        "val figures 2-fold cross-fitted (for models fine-tuned on train)",
    )
    parser.add_argument("--max-train", type=int, default=0, help="subset of train (0 = all)")
    parser.add_argument(
        "--held-out-every",
        type=int,
        default=0,
        help="k: threshold from the train photos the run held out of training (every k-th), "
        "which it never fit; use the run's holdout_every",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "results" / "open_set")
    args = parser.parse_args(argv)
    if not 0 < args.target_val_refusal < 0.5:
        parser.error("--target-val-refusal must be in (0, 0.5)")
    return args


def run(args: argparse.Namespace) -> Evaluation:
    backend = load_backend(args.artifact, args.threads)
    meta = backend.metadata
    sets = load_sets(
        args.data_dir or data_root(),
        [c.wnid for c in meta.classes],
        args.max_train,
        args.held_out_every,
    )
    outputs = {
        name: model_outputs(args.artifact, list(s.paths), backend, args.batch_size)
        for name, s in sets.items()
    }
    evaluations = [
        evaluate(meta, method, params, outputs, sets, args.target_val_refusal, args.threshold_from)
        for method, params in candidates_for(meta, args.method)
    ]
    chosen = choose(evaluations)
    print_table(evaluations, chosen)
    f = chosen.figures
    print(
        f"\nchosen: {chosen.label} threshold={chosen.threshold:.6g}  "
        f"(held-out OOD half: cats {pct(f['cats_refused_held_out'])}, "
        f"dogs {pct(f['dogs_refused_held_out'])})"
    )
    memorised = args.threshold_from == "train" and not args.held_out_every
    if memorised and f["val_refused"] > 1.5 * args.target_val_refusal:
        print(
            f"note: val refused {pct(f['val_refused'])} vs {pct(f['train_refused'])} of train: "
            "a model fine-tuned on train scores its own training photos higher than new ones, "
            "so a train quantile refuses more new photos; consider --threshold-from val-crossfit."
        )
    missed = targets_missed(f)
    print("targets met" if not missed else f"TARGETS MISSED: {', '.join(missed)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md = args.out_dir / f"{args.artifact.stem}.md"
    md.write_text(markdown_report(args.artifact, meta, evaluations, chosen, args))
    plot(evaluations, chosen, args.out_dir / f"{args.artifact.stem}.png")
    print(f"wrote {md} and {md.with_suffix('.png')}")
    if args.write:
        rule = OpenSetRule(chosen.method, chosen.threshold, chosen.params)
        counts = {name: len(s.paths) for name, s in sets.items()}
        metrics = {
            **meta.metrics,
            "open_set": metrics_entry(
                chosen, args.target_val_refusal, args.threshold_from, counts, args.held_out_every
            ),
        }
        new_meta = dataclasses.replace(meta, open_set=rule, metrics=metrics)
        del backend  # release the file before replacing it
        rewrite_metadata(args.artifact, new_meta)
        print(f"wrote rule {json.dumps(dataclasses.asdict(rule))} into {args.artifact}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except (ArtifactError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"open-set calibration failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
