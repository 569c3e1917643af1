"""Static-int8 ONNX artifact from a shipped TorchScript one, accepted only if it answers as fp32.

    python -m training.release.quantize model/efficientnet_lite0_imagewoof.pt \\
        [--out model/efficientnet_lite0_imagewoof.int8.onnx] [--data-root ../shared/data] \\
        [--calibration-photos 300] [--calibration-method MinMax] [--weight-bits 8] \\
        [--max-float-nodes 8] [--seed 0] [--report results/bench/int8.json]
    python -m training.release.quantize model/efficientnet_lite0_imagewoof.pt \\
        --check model/efficientnet_lite0_imagewoof.int8.onnx [--report results/bench/int8.json]

Steps: derive the fp32 ONNX (``training.release.onnx_export``), quantize it
(``training.release.int8_recipe``) calibrated on Imagewoof TRAIN photos, then compare the
answers both give (``training.release.int8_acceptance``) on ``unseen``, ``web`` and ``val``
(named breed, open-set verdict) and on ``ood`` (verdict). The int8 file is written only when
the comparison passes ``ACCEPTANCE``; otherwise the command exits 1 with the reason.
``--check EXISTING`` runs the same comparison on an int8 file already built, writing nothing
but the report (which says why, and the command exits 1, when it falls short).

The artifact carries the fp32 metadata with version ``<version>+int8``, how it was calibrated
(``extra.quantization``) and what was measured (``metrics.int8``). The data root defaults to
the lab's (``training.lab.paths``, ``$BREED_DATA_DIR``). Needs torch and onnx; the server
does not.
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
from pathlib import Path
from typing import Any

import numpy as np

from model.artifact import atomic_write
from model.backends import ArtifactError, OnnxBackend
from model.defaults import INT8_MODEL
from model.metadata import ModelMetadata
from model.precision import SERVED_ANSWERS
from training.lab.paths import data_root
from training.release.artifact_metadata import rewrite_metadata
from training.release.int8_acceptance import (
    Comparison,
    compare,
    comparison_table,
    int8_metadata,
    model_ms,
    refusals,
)
from training.release.int8_recipe import (
    Recipe,
    Sensitivity,
    calibration_sample,
    find_sensitive_nodes,
    preprocessed,
    quantize,
    tagged,
    with_float_weights,
    with_metadata,
)
from training.release.onnx_export import convert

log = logging.getLogger("training.release.quantize")  # the same name when run as __main__


class QuantizationRefusedError(RuntimeError):
    """The int8 model does not answer as the fp32 one closely enough to be shipped."""


def calibrated_int8(
    fp32_path: Path, int8_path: Path, train_dir: Path, recipe: Recipe, seed: int, work: Path
) -> tuple[dict[str, object], list[tuple[Path, int]]]:
    """Quantize ``fp32_path`` into ``int8_path`` by ``recipe``.

    Returns how it was made (``extra.quantization``) and the calibration sample.
    """
    meta = OnnxBackend(fp32_path, threads=1).metadata
    sample = calibration_sample(train_dir, meta, recipe.calibration_photos, seed)
    held_out = calibration_sample(
        train_dir, meta, recipe.sensitivity_photos, seed + 1, frozenset(p for p, _ in sample)
    )
    log.info("calibrating on %d train photos", len(sample))
    rows = (row for batch in preprocessed([p for p, _ in sample], meta) for row in batch)
    ranges = work / "ranges"
    quantize(fp32_path, int8_path, rows, recipe.weight_bits, recipe.calibration_method,
             ranges=ranges)  # fmt: skip
    sensitivity = None
    if recipe.weight_bits == 7 and held_out:
        with_metadata(int8_path, tagged(meta, 7))
        held_out_rows = np.concatenate(list(preprocessed([p for p, _ in held_out], meta)))
        sensitivity = find_sensitive_nodes(
            fp32_path, int8_path, held_out_rows, ranges, recipe, work
        )
        if sensitivity.float_nodes:
            int8_path.write_bytes(with_float_weights(int8_path, fp32_path, sensitivity.float_nodes))
    calibration = _recipe_record(recipe, meta, sample, held_out, seed, sensitivity)
    # Tagged before measuring, so it runs on the kernels the service will use.
    int8_meta = dataclasses.replace(
        meta, version=f"{meta.version}+int8", extra={**meta.extra, "quantization": calibration}
    )
    with_metadata(int8_path, int8_meta)
    return calibration, sample


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
    """The int8 metadata with what was measured: the comparison and the model times.

    Model times are of one batch-1 run of ``timing_photo``, one thread.
    """
    fp32, int8 = OnnxBackend(fp32_path, threads=1), OnnxBackend(int8_path, threads=1)
    row = next(preprocessed([timing_photo], fp32.metadata))
    timing = {"fp32": model_ms(fp32, row), "int8": model_ms(int8, row)}
    return int8_metadata(int8.metadata, calibration, comparison, timing)


def build(
    src: Path, out: Path, data_root: Path, recipe: Recipe | None = None, seed: int = 0
) -> ModelMetadata:
    """The whole command: fp32 ONNX, calibration, sensitive nodes, int8, comparison, artifact.

    Raises QuantizationRefusedError (nothing written) when the int8 model falls short.
    """
    recipe = recipe or Recipe()
    train_dir = data_root / "imagewoof" / "train"
    if not train_dir.is_dir():
        raise ArtifactError(f"no calibration photos: {train_dir} is not a folder")
    with tempfile.TemporaryDirectory(prefix="breedrec-quantize-") as tmp:
        work = Path(tmp)
        fp32_path, int8_path = work / "fp32.onnx", work / "int8.onnx"
        convert(src, fp32_path)
        calibration, sample = calibrated_int8(fp32_path, int8_path, train_dir, recipe, seed, work)
        results, problems = compared(fp32_path, int8_path, data_root)
        if problems:
            raise QuantizationRefusedError("; ".join(problems))
        int8_meta = accepted(
            measured_metadata(fp32_path, int8_path, results, calibration, sample[0][0])
        )
        with_metadata(int8_path, int8_meta)
        OnnxBackend(int8_path, threads=1)  # the finished file loads and its metadata parses
        with atomic_write(out) as part:
            shutil.copyfile(int8_path, part)
    return int8_meta


def accepted(meta: ModelMetadata) -> ModelMetadata:
    """Mark an int8 copy that passed on the service's answers: only such a copy is served by
    ``MODEL_PRECISION=auto`` (model/precision.py)."""
    int8 = {**meta.metrics["int8"], "accepted_on": SERVED_ANSWERS}
    return dataclasses.replace(meta, metrics={**meta.metrics, "int8": int8})


def check(src: Path, existing: Path, data_root: Path) -> tuple[ModelMetadata, list[str]]:
    """The acceptance of an int8 file already built, measured again; the file is not touched.

    Returns its metadata as it would be built now from ``src`` (the rule, prior and figures of
    the current ``.pt``, ``metrics.int8`` as measured now, the recorded calibration) and every
    way it falls short of ``ACCEPTANCE`` (empty: accepted).
    """
    stored = OnnxBackend(existing, threads=1).metadata
    calibration = stored.extra.get("quantization", {})
    train_dir = data_root / "imagewoof" / "train"
    count, seed = int(calibration.get("photos", 1)), int(calibration.get("seed", 0))
    first = calibration_sample(train_dir, stored, count, seed)[0][0]  # timed as when built
    with tempfile.TemporaryDirectory(prefix="breedrec-quantize-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        convert(src, fp32_path)
        results, problems = compared(fp32_path, existing, data_root)
        measured = measured_metadata(fp32_path, existing, results, calibration, first)
    return dataclasses.replace(measured, extra=stored.extra), problems


def _recipe_record(
    recipe: Recipe,
    meta: ModelMetadata,
    sample: list[tuple[Path, int]],
    held_out: list[tuple[Path, int]],
    seed: int,
    sensitivity: Sensitivity | None,
) -> dict[str, object]:
    """What the artifact says about how it was made (``extra.quantization``)."""
    per_class = len(sample) // len(meta.classes)
    record: dict[str, object] = {
        "method": f"onnxruntime quantize_static, QDQ, {recipe.calibration_method}; "
        f"{recipe.weight_bits}-bit int8 weights per channel, uint8 activations",
        "weight_bits": recipe.weight_bits,
        "calibration_method": recipe.calibration_method,
        "photos": len(sample),
        "split": "imagewoof/train",
        "selection": f"{per_class} per breed: random.Random({seed}).sample of each breed's "
        "sorted file list",
        "seed": seed,
    }
    if sensitivity is not None:
        record["float_nodes"] = sensitivity.float_nodes
        record["sensitivity"] = {
            "photos": len(held_out),
            "selection": f"train photos outside the calibration sample, "
            f"{len(held_out) // len(meta.classes)} per breed: random.Random({seed + 1})",
            "distance": "mean KL divergence from fp32, breed head + ImageNet head",
            "target_8bit": round(sensitivity.target, 6),
            "all_quantized": round(sensitivity.all_quantized, 6),
            "chosen": round(sensitivity.chosen, 6),
            "max_float_nodes": recipe.max_float_nodes,
        }
    return record


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
        help="measure the acceptance of this int8 ONNX file instead of building one",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder with imagewoof/{train,unseen,web,val}/<wnid>/ and ood/ "
        "(default: the lab's data root, $BREED_DATA_DIR)",
    )
    defaults = Recipe()
    parser.add_argument(
        "--calibration-photos", type=int, default=defaults.calibration_photos, help="train photos"
    )
    parser.add_argument(
        "--calibration-method",
        choices=("MinMax", "Entropy", "Percentile", "Distribution"),
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
        "--max-float-nodes",
        type=int,
        default=defaults.max_float_nodes,
        help="most nodes left in float when 7-bit weights cost accuracy",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
    parser.add_argument("--report", type=Path, help="also write the measured figures here (JSON)")
    parser.add_argument(
        "--record",
        action="store_true",
        help="with --check: write the metadata measured now into the checked file (weights "
        "untouched), e.g. after the .pt got a new open-set rule",
    )
    return parser.parse_args(argv)


def report(
    args: argparse.Namespace, meta: ModelMetadata, problems: list[str], argv: list[str]
) -> dict[str, Any]:
    """The measured figures as results/bench/int8.json keeps them."""
    return {
        "artifact": str(args.check or args.out),
        "source": str(args.src),
        "version": meta.version,
        "quantization": meta.extra["quantization"],
        **meta.metrics["int8"],
        "accepted": not problems,
        "refusals": problems,
        "command": "python -m training.release.quantize " + " ".join(argv),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # ONNX Runtime's quantizer logs every scale it adjusts at INFO: keep only ours.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
    if args.out.suffix != ".onnx":
        print(f"quantize: {args.out} must end in .onnx", file=sys.stderr)
        return 2
    if args.calibration_photos < 1 or args.max_float_nodes < 0:
        message = "--calibration-photos must be >= 1 and --max-float-nodes >= 0"
        print(f"quantize: {message}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    root = args.data_root or data_root()
    problems: list[str] = []
    try:
        if args.check:
            meta, problems = check(args.src, args.check, root)
        else:
            recipe = Recipe(
                weight_bits=args.weight_bits,
                calibration_method=args.calibration_method,
                calibration_photos=args.calibration_photos,
                max_float_nodes=args.max_float_nodes,
            )
            meta = build(args.src, args.out, root, recipe, args.seed)
    except QuantizationRefusedError as exc:
        print(f"quantize: refused: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"quantize: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    if args.check and args.record:
        meta = ModelMetadata.from_json(meta.to_json())  # as the file will read it back
        rewrite_metadata(args.check, meta)
    if args.report:
        record = report(args, meta, problems, sys.argv[1:] if argv is None else argv)
        with atomic_write(args.report) as part:
            part.write_text(json.dumps(record, indent=2) + "\n")
    if problems:  # only --check gets here with problems: the report says why
        print(f"quantize: refused: {'; '.join(problems)}", file=sys.stderr)
        return 1
    done = f"checked {args.check}" if args.check else f"wrote {args.out}"
    log.info("%s in %.0fs", done, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
