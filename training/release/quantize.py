"""Static-int8 ONNX artifact from a shipped TorchScript one, judged against fp32 like any model.

    python -m training.release.quantize model/efficientnet_lite0_imagewoof.pt --variants \\
        [--out model/efficientnet_lite0_imagewoof.int8.onnx] [--data-root ../shared/data] \\
        [--seed 0] [--report results/bench/int8.json]
    python -m training.release.quantize model/efficientnet_lite0_imagewoof.pt \\
        [--calibration-photos 300] [--calibration-method MinMax] [--weight-bits 8] \\
        [--float-nodes 0] [--max-float-nodes 8] [--seed 0] [--report ...]
    python -m training.release.quantize model/efficientnet_lite0_imagewoof.pt \\
        --check model/efficientnet_lite0_imagewoof.int8.onnx [--record] [--report ...]

Steps: derive the fp32 ONNX (``training.release.onnx_export``); quantize it, calibrated on
Imagewoof TRAIN photos, by the recipe given (``training.release.int8_recipe``) or, with
``--variants``, by the variant ``training.release.int8_variants`` chooses on ``val``; give
the int8 copy its own verdict thresholds and looks_like margin, calibrated by the fp32
artifact's rules on the same photos (``training.release.int8_rules``); then judge its served
answers against fp32's (``training.release.int8_acceptance``: paired sign tests on
``unseen`` + ``web``, ``ood/cats`` and ``ood/dogs``). The int8 file is written only when it is
accepted, marked ``accepted_on: served answers`` (what ``MODEL_PRECISION=auto`` looks for);
otherwise the command exits 1 with the reason, the report (if asked) saying why.
``--check EXISTING`` judges an int8 file already built, as it is; with ``--record`` its
metadata is first rebuilt from the current ``.pt`` with its own rules calibrated again, and
the result (accepted or not) written into it, weights untouched.

The artifact carries the fp32 metadata with version ``<version>+int8``, its own open-set and
looks_like rules (and their figures), how it was made (``extra.quantization``) and what was
measured (``metrics.int8``). It takes its input already quantized to uint8: the graph's first
QuantizeLinear is done by the preprocessing (``preprocessing.input_quantization``). The data
root defaults to the lab's (``training.lab.paths``, ``$BREED_DATA_DIR``). Needs torch and
onnx; the server does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.artifact import atomic_write
from model.backends import ArtifactError, OnnxBackend, read_onnx_metadata
from model.defaults import INT8_MODEL
from model.metadata import ModelMetadata
from model.precision import SERVED_ANSWERS
from training.lab.paths import data_root
from training.release.artifact_metadata import rewrite_metadata
from training.release.int8_acceptance import (
    ACCEPTANCE,
    Comparison,
    compare,
    comparison_table,
    int8_metadata,
    model_ms,
    refusals,
)
from training.release.int8_recipe import (
    Recipe,
    calibration_sample,
    make_int8,
    preprocessed,
    with_metadata,
)
from training.release.int8_rules import calibrate_own_rules, rules_summary
from training.release.int8_variants import choose_variant
from training.release.onnx_export import convert

log = logging.getLogger("training.release.quantize")  # the same name when run as __main__


def missing_data(root: Path) -> list[str]:
    """What the command needs under ``root`` and does not find there."""
    needed = [
        root / "imagewoof" / "train",
        root / "imagewoof" / "index.csv",  # the calibrations' photo sets
        root / "ood" / "index.csv",
        *(root / "imagewoof" / s for s in ("unseen", "web", "val")),
        *(root / "ood" / s for s in ("cats", "dogs")),
    ]
    return [str(p) for p in needed if not p.exists()]


def compared(fp32_path: Path, int8_path: Path, data_root: Path) -> tuple[Comparison, list[str]]:
    """Both artifacts' answers compared (the table is printed) and every shortfall found."""
    comparison = compare(fp32_path, int8_path, data_root)
    print(comparison_table(comparison))
    return comparison, refusals(comparison)


def measured_metadata(
    fp32_path: Path,
    int8_path: Path,
    comparison: Comparison,
    calibration: dict[str, Any],
    timing_photo: Path,
) -> ModelMetadata:
    """The int8 metadata with what was measured: the comparison and the model times; marked
    accepted when the comparison passed the rule.

    Model times are of one batch-1 run of ``timing_photo`` as each copy's preprocessing gives
    it, one thread.
    """
    fp32, int8 = OnnxBackend(fp32_path, threads=1), OnnxBackend(int8_path, threads=1)
    timing = {
        name: model_ms(backend, next(preprocessed([timing_photo], backend.metadata)))
        for name, backend in (("fp32", fp32), ("int8", int8))
    }
    meta = int8_metadata(int8.metadata, calibration, comparison, timing)
    return accepted(meta) if not comparison.refusals() else meta


def accepted(meta: ModelMetadata) -> ModelMetadata:
    """Mark an int8 copy that passed on the service's answers: only such a copy is served by
    ``MODEL_PRECISION=auto`` (model/precision.py)."""
    int8 = {**meta.metrics["int8"], "accepted_on": SERVED_ANSWERS}
    return dataclasses.replace(meta, metrics={**meta.metrics, "int8": int8})


@dataclass
class Outcome:
    """What a build or check found: the int8 metadata, every shortfall, the rules and variants."""

    meta: ModelMetadata
    problems: list[str]
    rules: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, Any] | None = None


def _judged(
    fp32_path: Path,
    int8_path: Path,
    root: Path,
    calibration: dict[str, Any],
    timing_photo: Path,
    variants: dict[str, Any] | None = None,
) -> Outcome:
    comparison, problems = compared(fp32_path, int8_path, root)
    meta = measured_metadata(fp32_path, int8_path, comparison, calibration, timing_photo)
    rules = {
        "fp32": rules_summary(OnnxBackend(fp32_path, threads=1).metadata),
        "int8": rules_summary(meta),
    }
    return Outcome(meta, problems, rules, variants)


def build(
    src: Path,
    out: Path,
    data_root: Path,
    recipe: Recipe | None = None,
    seed: int = 0,
    variants: bool = False,
) -> Outcome:
    """The whole command: fp32 ONNX, int8 by ``recipe`` (or the chosen variant), its own
    rules, the acceptance, the artifact (written only when accepted)."""
    absent = missing_data(data_root)
    if absent:
        raise ArtifactError(f"missing data: {', '.join(absent)}")
    train_dir = data_root / "imagewoof" / "train"
    with tempfile.TemporaryDirectory(prefix="breedrec-quantize-") as tmp:
        work = Path(tmp)
        fp32_path = work / "fp32.onnx"
        convert(src, fp32_path)
        fp32_meta = OnnxBackend(fp32_path, threads=1).metadata
        tried = None
        if variants:
            chosen = choose_variant(fp32_path, data_root, seed, work / "variants")
            int8_path, calibration, tried = chosen.path, chosen.calibration, chosen.record()
            count, seed = int(calibration["photos"]), int(calibration["seed"])
            sample = calibration_sample(train_dir, fp32_meta, count, seed)
        else:
            int8_path = work / "int8.onnx"
            calibration, sample = make_int8(
                fp32_path, int8_path, train_dir, recipe or Recipe(), seed, work
            )
        calibrate_own_rules(int8_path, fp32_meta, data_root)
        outcome = _judged(fp32_path, int8_path, data_root, calibration, sample[0][0], tried)
        if not outcome.problems:
            with_metadata(int8_path, outcome.meta)
            OnnxBackend(int8_path, threads=1)  # the finished file loads and its metadata parses
            with atomic_write(out) as part:
                shutil.copyfile(int8_path, part)
    return outcome


def check(src: Path, existing: Path, data_root: Path, record: bool = False) -> Outcome:
    """The acceptance of an int8 file already built, measured again.

    Without ``record`` the file is judged as it is (its own recorded rules) and not touched.
    With ``record`` its metadata is first rebuilt from the current ``.pt`` (the int8 version,
    the recorded calibration) with its own rules calibrated again, and what was measured is
    written into it (weights untouched), accepted or not.
    """
    stored = read_onnx_metadata(existing)
    calibration = stored.extra.get("quantization", {})
    train_dir = data_root / "imagewoof" / "train"
    count, seed = int(calibration.get("photos", 1)), int(calibration.get("seed", 0))
    first = calibration_sample(train_dir, stored, count, seed)[0][0]  # timed as when built
    with tempfile.TemporaryDirectory(prefix="breedrec-quantize-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        convert(src, fp32_path)
        target = existing
        if record:
            fp32_meta = OnnxBackend(fp32_path, threads=1).metadata
            target = Path(tmp) / "int8.onnx"
            shutil.copyfile(existing, target)
            base = dataclasses.replace(
                fp32_meta,
                version=f"{fp32_meta.version}+int8",
                preprocessing=dataclasses.replace(
                    fp32_meta.preprocessing,
                    input_quantization=stored.preprocessing.input_quantization,
                ),
                extra={**fp32_meta.extra, "quantization": calibration},
            )
            with_metadata(target, base)
            calibrate_own_rules(target, fp32_meta, data_root)
        outcome = _judged(fp32_path, target, data_root, calibration, first)
        if record:
            rewrite_metadata(existing, ModelMetadata.from_json(outcome.meta.to_json()))
    return outcome


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Shipped TorchScript artifact -> accepted static-int8 ONNX artifact."
    )
    parser.add_argument("src", type=Path, help="TorchScript artifact (.pt) with metadata")
    parser.add_argument("--out", type=Path, default=INT8_MODEL, help="int8 ONNX to write")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="EXISTING",
        help="judge this int8 ONNX file instead of building one",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder with imagewoof/{train,unseen,web,val}/<wnid>/ and ood/{cats,dogs}/ "
        "(default: the lab's data root, $BREED_DATA_DIR)",
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="try the calibration variants of training.release.int8_variants and build the "
        "one its rule chooses on val (the recipe options are then ignored)",
    )
    defaults = Recipe()
    parser.add_argument(
        "--calibration-photos", type=int, default=defaults.calibration_photos, help="train photos"
    )
    parser.add_argument(
        "--calibration-method",
        choices=("MinMax", "Entropy", "Percentile"),
        default=defaults.calibration_method,
    )
    parser.add_argument(
        "--weight-bits",
        type=int,
        choices=(7, 8),
        default=defaults.weight_bits,
        help="8 needs the slow exact kernels on CPUs without VNNI",
    )
    parser.add_argument(
        "--float-nodes",
        type=int,
        default=defaults.float_nodes,
        help="8-bit weights: this many most sensitive nodes keep float weights",
    )
    parser.add_argument(
        "--max-float-nodes",
        type=int,
        default=defaults.max_float_nodes,
        help="7-bit weights: most nodes left in float when the lost bit costs accuracy",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
    parser.add_argument("--report", type=Path, help="also write the measured figures here (JSON)")
    parser.add_argument(
        "--record",
        action="store_true",
        help="with --check: calibrate the file's own rules again from the current .pt and "
        "write what was measured into it (weights untouched)",
    )
    return parser.parse_args(argv)


def report(args: argparse.Namespace, outcome: Outcome, argv: list[str]) -> dict[str, Any]:
    """The measured figures as results/bench/int8.json keeps them."""
    meta = outcome.meta
    measured = dict(meta.metrics["int8"])
    record: dict[str, Any] = {
        "artifact": str(args.check or args.out),
        "source": str(args.src),
        "version": meta.version,
        "accepted": not outcome.problems,
        "refusals": outcome.problems,
        "acceptance": measured.pop("acceptance"),
        "rules": outcome.rules,
        "quantization": meta.extra["quantization"],
    }
    if outcome.variants is not None:
        record["variants"] = outcome.variants
    record.update(measured)
    record["information_only"] = (
        "splits: agreement of the two copies' answers, each under its own rules; "
        "only the acceptance criteria decide"
    )
    record["command"] = "python -m training.release.quantize " + " ".join(argv)
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # ONNX Runtime's quantizer logs every scale it adjusts at INFO: keep only ours.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
    if args.out.suffix != ".onnx":
        print(f"quantize: {args.out} must end in .onnx", file=sys.stderr)
        return 2
    if args.calibration_photos < 1 or args.max_float_nodes < 0 or args.float_nodes < 0:
        message = "--calibration-photos must be >= 1, --float-nodes and --max-float-nodes >= 0"
        print(f"quantize: {message}", file=sys.stderr)
        return 2
    if args.record and not args.check:
        print("quantize: --record needs --check", file=sys.stderr)
        return 2
    started = time.perf_counter()
    root = args.data_root or data_root()
    try:
        if args.check:
            outcome = check(args.src, args.check, root, args.record)
        else:
            recipe = Recipe(
                weight_bits=args.weight_bits,
                calibration_method=args.calibration_method,
                calibration_photos=args.calibration_photos,
                max_float_nodes=args.max_float_nodes,
                float_nodes=args.float_nodes,
            )
            outcome = build(args.src, args.out, root, recipe, args.seed, args.variants)
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"quantize: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    if args.report:
        record = report(args, outcome, sys.argv[1:] if argv is None else argv)
        with atomic_write(args.report) as part:
            part.write_text(json.dumps(record, indent=2) + "\n")
    if outcome.problems:
        where = "nothing written" if not args.check else f"{args.check} not accepted"
        print(f"quantize: refused ({where}): {'; '.join(outcome.problems)}", file=sys.stderr)
        return 1
    done = f"checked {args.check}" if args.check else f"wrote {args.out}"
    log.info("%s in %.0fs (rule: %s)", done, time.perf_counter() - started, ACCEPTANCE.test)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
