"""Lab command: calibrate when an answer says what else the photo looks like, and store it.

    python -m training.release.looks_like --artifact model/efficientnet_lite0_imagewoof.pt \\
        [--write [--copies model/efficientnet_lite0_imagewoof.onnx ...]]

Run after ``training.release.open_set`` (the rule reads the verdicts). The one threshold is
set by the rule in ``training.lab.looks_like_scoring``, written before any run, on the
genuine calibration photos only (Imagewoof val, or with ``--held-out-every`` the train
photos the run held out); ``unseen``, ``web`` and ``ood/`` are printed, never used.
``--write`` stores the rule and its figures in the artifact's metadata in place (weights
untouched, verified); ``--copies`` stores the same in the artifact's fp32 ONNX copy, whose
metadata must otherwise stay the artifact's. An int8 copy is refused there: it calibrates its
own margin on its own outputs (``python -m training.release.quantize ... --check --record``).
The page of figures is ``python -m training.reports.looks_like``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from model.backends import load_backend
from model.defaults import SHIPPED_MODEL
from model.metadata import ModelMetadata
from training.lab.evaluate import model_outputs
from training.lab.looks_like_scoring import (
    LooksLikeRules,
    calibrated_rule,
    rules_text,
    set_figures,
    targets_missed,
)
from training.lab.open_set_data import load_sets
from training.lab.paths import data_root
from training.release.artifact_metadata import rewrite_metadata
from training.release.calibration_cli import run_calibration

log = logging.getLogger(__name__)
REPORTED = ("unseen", "web", "cats", "dogs")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=SHIPPED_MODEL, help=".pt or .onnx")
    parser.add_argument("--write", action="store_true", help="store the rule in the artifact")
    parser.add_argument(
        "--copies", type=Path, nargs="*", default=[], help="with --write: its ONNX copies too"
    )
    parser.add_argument(
        "--genuine-budget",
        type=float,
        default=LooksLikeRules.genuine_budget,
        help="most genuine photos carrying looks_like on an unsure answer",
    )
    parser.add_argument(
        "--held-out-every",
        type=int,
        default=0,
        help="k: genuine photos are the train photos the run held out (every k-th); "
        "default: Imagewoof val",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 0 <= args.genuine_budget < 0.5:
        parser.error("--genuine-budget must be in [0, 0.5)")
    if args.copies and not args.write:
        parser.error("--copies needs --write")
    return args


def with_rule(meta: ModelMetadata, new: ModelMetadata) -> ModelMetadata:
    """``meta`` (a copy's own) with ``new``'s looks_like rule and figures."""
    metrics = {**meta.metrics, "looks_like": new.metrics["looks_like"]}
    return dataclasses.replace(meta, looks_like=new.looks_like, metrics=metrics)


def run(args: argparse.Namespace) -> ModelMetadata:
    int8_copies = [c for c in args.copies if "quantization" in load_backend(c, 1).metadata.extra]
    if int8_copies:
        raise ValueError(
            f"{int8_copies[0]} is an int8 copy: its looks_like margin is its own "
            "(python -m training.release.quantize ... --check --record)"
        )
    backend = load_backend(args.artifact, args.threads)
    meta = backend.metadata
    genuine = "train" if args.held_out_every else "val"
    rules = LooksLikeRules(genuine_budget=args.genuine_budget, genuine=genuine)
    # A small train subset unless it is the genuine set: only the genuine set is read.
    max_train = 0 if args.held_out_every else 1
    wnids = [c.wnid for c in meta.classes]
    sets = load_sets(args.data_dir or data_root(), wnids, max_train, args.held_out_every)
    wanted = [genuine, *(name for name in REPORTED if name in sets)]
    outputs = {
        name: model_outputs(args.artifact, list(sets[name].paths), backend, args.batch_size)
        for name in wanted
    }
    rule = calibrated_rule(outputs[genuine], meta, rules)
    measured = dataclasses.replace(meta, looks_like=rule)
    figures = {name: set_figures(measured, outputs[name], sets[name]) for name in wanted}
    entry = {
        "threshold_rule": rules_text(rules, args.held_out_every),
        "figures": {s: {k: round(v, 4) for k, v in row.items()} for s, row in figures.items()},
    }
    new_meta = dataclasses.replace(measured, metrics={**meta.metrics, "looks_like": entry})
    print(f"rule: {json.dumps(dataclasses.asdict(rule))}")
    for name, row in figures.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
    missed = targets_missed(figures)
    print("targets met" if not missed else f"TARGETS MISSED: {', '.join(missed)}")
    if args.write:
        del backend  # release the file before replacing it
        rewrite_metadata(args.artifact, new_meta)
        print(f"wrote the looks_like rule into {args.artifact}")
        for copy in args.copies:
            rewrite_metadata(copy, with_rule(load_backend(copy, 1).metadata, new_meta))
            print(f"wrote the looks_like rule into {copy}")
    return new_meta


def main(argv: list[str] | None = None) -> int:
    return run_calibration("looks_like", parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
