"""Lab command: calibrate the three verdicts (sure / unsure / unknown) of an artifact.

    python -m training.release.open_set --artifact model/efficientnet_lite0_imagewoof.pt [--write]

Every candidate scorer (``model.open_set.SCORERS`` with a small parameter grid fixed in
advance) is measured on the calibration sets: genuine breed photos the network never fit
(Imagewoof val, or with ``--held-out-every`` the train photos its run held out), ood/cats and
ood/dogs. The two thresholds and the scorer of each come from the rules written in
``training.lab.open_set_scoring`` before any run. ``unseen`` and ``web`` are only
reported, never used. ``--write`` stores the rule and its figures in the artifact's metadata
in place, leaving the weights untouched (verified).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from model.backends import load_backend
from training.lab.evaluate import model_outputs
from training.lab.open_set_data import load_sets
from training.lab.open_set_scoring import (
    Rules,
    candidates_for,
    choose,
    evaluate,
    metrics_entry,
    rule_of,
    targets_missed,
    verdict_shares,
    with_rule,
)
from training.lab.paths import REPO_ROOT, data_root
from training.release.artifact_metadata import rewrite_metadata
from training.release.calibration_cli import run_calibration
from training.reports.open_set_report import markdown_report, plot, print_tables

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, required=True, help=".pt or .onnx artifact")
    parser.add_argument("--write", action="store_true", help="store the rule in the artifact")
    parser.add_argument("--method", default=None, help="evaluate only this scorer")
    parser.add_argument(
        "--cats-refused", type=float, default=Rules.cats_refused, help="share of cats unknown"
    )
    parser.add_argument(
        "--dogs-sure", type=float, default=Rules.dogs_sure, help="most other dogs sure"
    )
    parser.add_argument("--max-train", type=int, default=0, help="subset of train (0 = all)")
    parser.add_argument(
        "--held-out-every",
        type=int,
        default=0,
        help="k: genuine photos are the train photos the run held out of training (every "
        "k-th), which it never fit; use the run's holdout_every. Default: Imagewoof val",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "results" / "open_set")
    args = parser.parse_args(argv)
    if not 0.5 < args.cats_refused < 1:
        parser.error("--cats-refused must be in (0.5, 1)")
    if not 0 < args.dogs_sure < 0.5:
        parser.error("--dogs-sure must be in (0, 0.5)")
    return args


def run(args: argparse.Namespace) -> dict:
    backend = load_backend(args.artifact, args.threads)
    meta = backend.metadata
    rules = Rules(args.cats_refused, args.dogs_sure, "train" if args.held_out_every else "val")
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
        evaluate(meta, method, params, outputs, sets, rules)
        for method, params in candidates_for(meta, args.method)
    ]
    unknown, sure = choose(evaluations)
    rule = rule_of(unknown, sure)
    shares = verdict_shares(with_rule(meta, rule), outputs, sets)
    print_tables(evaluations, unknown, sure, shares)
    missed = targets_missed(shares)
    print("targets met" if not missed else f"TARGETS MISSED: {', '.join(missed)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md = args.out_dir / f"{args.artifact.stem}.md"
    md.write_text(markdown_report(args, meta, rules, evaluations, unknown, sure, shares))
    plot(evaluations, unknown, sure, rules.genuine, args.out_dir / f"{args.artifact.stem}.png")
    print(f"wrote {md} and {md.with_suffix('.png')}")
    if args.write:
        counts = {name: len(s.paths) for name, s in sets.items()}
        entry = metrics_entry(unknown, sure, rules, shares, counts, args.held_out_every)
        new_meta = dataclasses.replace(
            meta, open_set=rule, metrics={**meta.metrics, "open_set": entry}
        )
        del backend  # release the file before replacing it
        rewrite_metadata(args.artifact, new_meta)
        print(f"wrote rule {json.dumps(dataclasses.asdict(rule))} into {args.artifact}")
    return shares


def main(argv: list[str] | None = None) -> int:
    return run_calibration("open-set", parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
