"""Static-int8 ONNX artifact from a shipped TorchScript one, accepted only if it matches fp32.

    python -m training.release.quantize model/efficientnet_lite0_imagewoof.pt \\
        [--out model/efficientnet_lite0_imagewoof.int8.onnx] [--data-root ../shared/data] \\
        [--calibration-photos 300] [--calibration-method MinMax] [--weight-bits 8] \\
        [--max-float-nodes 8] [--seed 0] [--report results/bench/int8.json]

Steps: derive the fp32 ONNX (``training.release.onnx_export``), quantize it with ONNX Runtime's
``quantize_static`` (QDQ; int8 weights per output channel, uint8 activations) calibrated on
Imagewoof TRAIN photos, then compare it with the fp32 artifact on ``unseen``, ``web`` and
``val`` (top-1, open-set verdicts) and on ``ood`` (verdicts). The int8 file is written only
when the comparison passes ``ACCEPTANCE``; otherwise the command exits 1 with the reason.

Weight precision (``Recipe``): full 8-bit weights by default. On x86 CPUs without VNNI (AVX2,
like the EPYC this runs on) ONNX Runtime's fast u8×s8 kernels add pairs of products in 16
bits, which saturates for such weights, so they run on the exact kernels (see
``model.backends``). 7-bit weights run exactly on the fast kernels; that recipe gives float
weights back to the nodes that suffer most, found on held-out train photos, but for the
shipped model it still lost too much accuracy (see docs/benchmark.md).
The artifact carries the fp32 metadata with version ``<version>+int8``, how it was calibrated
(``extra.quantization``) and what was measured (``metrics.int8``).

Photos are read by folder, ``<split>/<wnid>/<file>``, for the classes listed in the artifact's
metadata, with the service's own preprocessing. A build tool like
``training.release.onnx_export``: it needs torch and onnx, the server does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.backends import ArtifactError, OnnxBackend
from model.metadata import METADATA_KEY, ModelMetadata
from model.open_set import is_known, known_scores
from model.preprocessing import ImageDecodeError, preprocess_bytes

log = logging.getLogger("training.release.quantize")  # the same name when run as __main__

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "model" / "efficientnet_lite0_imagewoof.int8.onnx"
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
LABELLED_SPLITS = ("unseen", "web", "val")  # under <data-root>/imagewoof/
BATCH = 32


@dataclass(frozen=True)
class Acceptance:
    """What the int8 artifact must keep of the fp32 one (percentages and percentage points)."""

    min_top1_agreement: float = 99.0  # on unseen + web + val together
    max_top1_drop: float = 0.3  # on unseen and on web, each
    min_verdict_agreement: float = 99.0  # open-set verdicts on unseen, web and ood, each
    drop_splits: tuple[str, ...] = ("unseen", "web")
    verdict_splits: tuple[str, ...] = ("unseen", "web", "ood")


ACCEPTANCE = Acceptance()


@dataclass(frozen=True)
class Recipe:
    """How the int8 artifact is made; stored in its metadata (``extra.quantization``).

    ``weight_bits`` 8 is the default because it is the recipe that passes ``ACCEPTANCE`` for
    the shipped model (docs/benchmark.md lists what was tried). 7-bit weights run exactly on
    the fast u8×s8 kernels of CPUs without VNNI (8-bit ones need the slower exact kernels
    there, see ``model.backends``); with 7 bits the nodes that suffer most from the lost bit
    are found on held-out train photos and keep float weights.
    """

    weight_bits: int = 8
    calibration_method: str = "MinMax"  # ONNX Runtime CalibrationMethod name
    calibration_photos: int = 300
    sensitivity_photos: int = 300  # train photos outside the calibration sample
    max_float_nodes: int = 8  # most nodes left in float


class QuantizationRefusedError(RuntimeError):
    """The int8 model does not match the fp32 one closely enough to be shipped."""


# ---------------------------------------------------------------- photos


def labelled_photos(split_dir: Path, meta: ModelMetadata) -> list[tuple[Path, int]]:
    """(photo, class index) for every image in ``split_dir/<wnid>/`` of the metadata's classes."""
    photos = []
    for index, breed in enumerate(meta.classes):
        folder = split_dir / breed.wnid
        if folder.is_dir():
            photos += [(p, index) for p in sorted(folder.iterdir()) if _is_image(p)]
    return photos


def unlabelled_photos(root: Path) -> list[Path]:
    """Every image under ``root`` (any depth), sorted: photos of none of the breeds."""
    return sorted(p for p in root.rglob("*") if _is_image(p))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def calibration_sample(
    train_dir: Path,
    meta: ModelMetadata,
    count: int,
    seed: int,
    taken: frozenset[Path] = frozenset(),
) -> list[tuple[Path, int]]:
    """``count`` train photos, the same number per breed, a seeded sample of sorted lists.

    Photos in ``taken`` (another sample's) are never drawn.
    """
    per_class = max(1, count // len(meta.classes))
    everything = [(p, i) for p, i in labelled_photos(train_dir, meta) if p not in taken]
    rng = random.Random(seed)
    sample = []
    for index in range(len(meta.classes)):
        photos = [(p, i) for p, i in everything if i == index]
        sample += rng.sample(photos, min(per_class, len(photos)))
    return sample


def preprocessed(paths: Iterable[Path], meta: ModelMetadata) -> Iterator[np.ndarray]:
    """Batches of model input rows, made exactly as the service makes them."""
    rows = []
    for path in paths:
        try:
            rows.append(preprocess_bytes(path.read_bytes(), meta.preprocessing))
        except ImageDecodeError as exc:
            raise ArtifactError(f"cannot read photo {path}: {exc.message}") from None
        if len(rows) == BATCH:
            yield np.stack(rows)
            rows = []
    if rows:
        yield np.stack(rows)


# ---------------------------------------------------------------- quantization


def quantize(
    fp32: Path,
    out: Path,
    calibration: Iterable[np.ndarray] | None,
    weight_bits: int = 7,
    method: str = "MinMax",
    exclude: Iterable[str] = (),
    ranges: Path | None = None,
) -> None:
    """Write the static-int8 (QDQ) version of ``fp32`` to ``out``, calibrated on the rows given.

    ``weight_bits`` 7 (``reduce_range``) or 8; ``exclude``: nodes left in float. ``ranges``
    caches the calibrated activation ranges: when the file exists, ``calibration`` may be
    None and is not read, so variants of one calibration cost no second pass.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, got {weight_bits}")

    class Rows(CalibrationDataReader):
        def __init__(self, rows: Iterable[np.ndarray]) -> None:
            self.rows = iter(rows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            return None if row is None else {"input": row[None]}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            Rows(calibration) if calibration is not None else None,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=weight_bits == 7,
            calibrate_method=CalibrationMethod[method],
            nodes_to_exclude=list(exclude),
            extra_options={"CalibMaxIntermediateOutputs": 16},
            calibration_cache_path=ranges,
        )


# ---------------------------------------------------------------- sensitivity


def distance(want: np.ndarray, got: np.ndarray, meta: ModelMetadata) -> float:
    """How far int8 outputs are from fp32 ones: mean KL divergence of each head's softmax.

    Both heads count: the breed head names the breed, and the ImageNet head (when the
    artifact has one) feeds the open-set verdict.
    """
    heads = [meta.outputs.breed] + ([meta.outputs.imagenet] if meta.outputs.imagenet else [])
    total = 0.0
    for start, end in heads:
        p, q = _log_softmax(want[:, start:end]), _log_softmax(got[:, start:end])
        total += float((np.exp(p) * (p - q)).sum(axis=1).mean())
    return total


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def with_float_weights(qdq: Path, fp32: Path, nodes: Collection[str]) -> bytes:
    """``qdq`` with the weights of ``nodes`` put back to their fp32 values (a whole model).

    ONNX Runtime then runs those nodes as float convolutions between the quantized
    activations around them. Unknown names are an error, so a recipe never silently
    keeps a node quantized.
    """
    import onnx
    from onnx import numpy_helper

    source = onnx.load(str(fp32)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in source.initializer}
    for constant in (n for n in source.node if n.op_type == "Constant"):  # torch's exporter
        value = next((a.t for a in constant.attribute if a.name == "value"), None)
        if value is not None:
            weights[constant.output[0]] = numpy_helper.to_array(value)
    model = onnx.load(str(qdq))
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    left = set(nodes)
    for node in graph.node:
        if node.name not in left:
            continue
        dequantize = producers.get(node.input[1]) if len(node.input) > 1 else None
        original = None
        if dequantize is not None and dequantize.op_type == "DequantizeLinear":
            original = weights.get(dequantize.input[0].removesuffix("_quantized"))
        if original is None:
            raise ValueError(f"node {node.name!r} has no quantized weight to put back")
        name = f"{dequantize.input[0].removesuffix('_quantized')}_float"
        graph.initializer.append(numpy_helper.from_array(original, name))
        node.input[1] = name
        left.discard(node.name)
    if left:
        raise ValueError(f"no such node(s) in the quantized graph: {sorted(left)}")
    return model.SerializeToString()


def quantized_weight_nodes(qdq: Path) -> list[str]:
    """Convolutions and matrix products whose weight comes through a DequantizeLinear."""
    import onnx

    graph = onnx.load(str(qdq)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    weighted = (n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul"))
    return [n.name for n in weighted if len(n.input) > 1 and n.input[1] in dequantized]


@dataclass
class Sensitivity:
    """Which nodes keep float weights, and the distances to fp32 (held-out train photos)."""

    float_nodes: list[str]
    target: float  # distance of the same calibration with full 8-bit weights
    all_quantized: float  # distance with every weight at ``recipe.weight_bits``
    chosen: float  # distance with ``float_nodes`` back in float


def find_sensitive_nodes(
    fp32_path: Path, qdq: Path, rows: np.ndarray, ranges: Path, recipe: Recipe, workdir: Path
) -> Sensitivity:
    """Nodes to give back float weights so ``qdq`` (7-bit) ends as close to fp32 as 8-bit.

    Measured on ``rows`` (train photos not used for calibration; never the test splits):
    each quantized node gets its float weight back on its own and is ranked by how much
    closer to fp32 that brings the outputs; then the top ones get theirs back, one more at a
    time, until the distance is at most the 8-bit model's (or ``recipe.max_float_nodes``).
    """
    fp32 = OnnxBackend(fp32_path, threads=None)
    meta = fp32.metadata
    want = _outputs(fp32, _batches(rows))

    def measure(model: Path | bytes) -> float:
        return distance(want, _outputs(OnnxBackend(model, threads=None), _batches(rows)), meta)

    eight = workdir / "eight.onnx"
    quantize(fp32_path, eight, None, 8, recipe.calibration_method, ranges=ranges)
    with_metadata(eight, _tagged(meta, 8))  # so it runs on the kernels serving would use
    target, base = measure(eight), measure(qdq)
    log.info("distance to fp32: %.5f with 8-bit weights, %.5f with %d-bit", target, base,
             recipe.weight_bits)  # fmt: skip
    if base <= target or recipe.max_float_nodes == 0:
        return Sensitivity([], target, base, base)
    nodes = quantized_weight_nodes(qdq)
    gains = {n: base - measure(with_float_weights(qdq, fp32_path, [n])) for n in nodes}
    ranked = sorted(nodes, key=lambda n: -gains[n])
    chosen, count = base, 0
    while count < min(recipe.max_float_nodes, len(ranked)) and chosen > target:
        count += 1
        chosen = measure(with_float_weights(qdq, fp32_path, ranked[:count]))
        log.info("float weights for %d node(s): distance %.5f", count, chosen)
    return Sensitivity(ranked[:count], target, base, chosen)


def _tagged(meta: ModelMetadata, weight_bits: int) -> ModelMetadata:
    return dataclasses.replace(meta, extra={"quantization": {"weight_bits": weight_bits}})


def _batches(rows: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


# ---------------------------------------------------------------- comparison


@dataclass
class SplitResult:
    """fp32 vs int8 on one split; accuracies only for labelled splits (percentages)."""

    split: str
    photos: int
    fp32_top1: float | None
    int8_top1: float | None
    top1_agreement: float
    fp32_known: float
    int8_known: float
    verdict_agreement: float


def _outputs(backend: OnnxBackend, batches: Iterable[np.ndarray]) -> np.ndarray:
    return np.concatenate([backend.run(batch) for batch in batches])


def compare_split(
    name: str,
    fp32: OnnxBackend,
    int8: OnnxBackend,
    paths: list[Path],
    labels: list[int] | None,
) -> SplitResult:
    meta = fp32.metadata
    start, end = meta.outputs.breed
    want_rows, got_rows = [], []
    for batch in preprocessed(paths, meta):
        want_rows.append(fp32.run(batch))
        got_rows.append(int8.run(batch))
    want, got = np.concatenate(want_rows), np.concatenate(got_rows)
    want_top, got_top = want[:, start:end].argmax(1), got[:, start:end].argmax(1)
    want_known = is_known(known_scores(want, meta), meta)
    got_known = is_known(known_scores(got, meta), meta)
    truth = np.asarray(labels) if labels is not None else None

    def pct(values: np.ndarray) -> float:
        return round(float(values.mean()) * 100, 2)

    return SplitResult(
        split=name,
        photos=len(paths),
        fp32_top1=pct(want_top == truth) if truth is not None else None,
        int8_top1=pct(got_top == truth) if truth is not None else None,
        top1_agreement=pct(want_top == got_top),
        fp32_known=pct(want_known),
        int8_known=pct(got_known),
        verdict_agreement=pct(want_known == got_known),
    )


def compare(
    fp32: OnnxBackend, int8: OnnxBackend, data_root: Path, splits: Iterable[str] = ()
) -> list[SplitResult]:
    """fp32 vs int8 on the labelled splits and ``ood`` (those present under ``data_root``)."""
    meta = fp32.metadata
    wanted = set(splits) or {*LABELLED_SPLITS, "ood"}
    results = []
    for split in LABELLED_SPLITS:
        photos = labelled_photos(data_root / "imagewoof" / split, meta)
        if split in wanted and photos:
            paths, labels = zip(*photos, strict=True)
            results.append(compare_split(split, fp32, int8, list(paths), list(labels)))
            log.info("%s", results[-1])
    ood = unlabelled_photos(data_root / "ood") if (data_root / "ood").is_dir() else []
    if "ood" in wanted and ood:
        results.append(compare_split("ood", fp32, int8, ood, None))
        log.info("%s", results[-1])
    return results


def pooled_agreement(results: list[SplitResult], splits: Iterable[str]) -> float | None:
    chosen = [r for r in results if r.split in set(splits)]
    photos = sum(r.photos for r in chosen)
    if not photos:
        return None
    return round(sum(r.top1_agreement * r.photos for r in chosen) / photos, 2)


def refusals(
    results: list[SplitResult],
    rule: Acceptance = ACCEPTANCE,
    required: Iterable[str] = (*LABELLED_SPLITS, "ood"),
) -> list[str]:
    """Every way the int8 model falls short of ``rule``; empty means accepted.

    A ``required`` split without photos is itself a reason to refuse.
    """
    by_split = {r.split: r for r in results}
    missing = sorted(set(required) - set(by_split))
    problems = [f"no photos for split(s) {missing}"] if missing else []
    agreement = pooled_agreement(results, LABELLED_SPLITS)
    if agreement is not None and agreement < rule.min_top1_agreement:
        problems.append(
            f"top-1 agreement with fp32 on {'+'.join(LABELLED_SPLITS)} is {agreement}% "
            f"< {rule.min_top1_agreement}%"
        )
    for split in rule.drop_splits:
        r = by_split.get(split)
        if r and r.fp32_top1 is not None and r.int8_top1 is not None:
            drop = round(r.fp32_top1 - r.int8_top1, 2)
            if drop > rule.max_top1_drop:
                problems.append(
                    f"top-1 on {split} drops {drop} pt ({r.fp32_top1}% -> {r.int8_top1}%) "
                    f"> {rule.max_top1_drop} pt"
                )
    for split in rule.verdict_splits:
        r = by_split.get(split)
        if r and r.verdict_agreement < rule.min_verdict_agreement:
            problems.append(
                f"open-set verdicts agree on {r.verdict_agreement}% of {split} "
                f"< {rule.min_verdict_agreement}%"
            )
    return problems


def comparison_table(results: list[SplitResult]) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        "split   photos  fp32_top1  int8_top1  top1_agree  fp32_known  int8_known  verdict_agree"
    ]
    for r in results:
        lines.append(
            f"{r.split:<7} {r.photos:>6}  {fmt(r.fp32_top1):>9}  {fmt(r.int8_top1):>9}  "
            f"{fmt(r.top1_agreement):>10}  {fmt(r.fp32_known):>10}  {fmt(r.int8_known):>10}  "
            f"{fmt(r.verdict_agreement):>13}"
        )
    agreement = pooled_agreement(results, LABELLED_SPLITS)
    lines.append(f"top-1 agreement on {'+'.join(LABELLED_SPLITS)}: {fmt(agreement)}%")
    return "\n".join(lines)


def median_ms(backend: OnnxBackend, row: np.ndarray, repeats: int = 200) -> float:
    """Median time of one batch-1 run (after a warm-up)."""
    for _ in range(20):
        backend.run(row)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        backend.run(row)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


# ---------------------------------------------------------------- the artifact


def with_metadata(path: Path, meta: ModelMetadata) -> None:
    """Store ``meta`` in the ONNX file's ``metadata_props`` (replacing what was there)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()
    proto.producer_name = "breedrecognizer training.release.quantize"
    onnx.save(proto, str(path))


def int8_metadata(
    fp32: ModelMetadata,
    calibration: dict[str, object],
    results: list[SplitResult],
    timing: dict[str, float],
) -> ModelMetadata:
    measured = {
        "splits": {r.split: dataclasses.asdict(r) for r in results},
        "top1_agreement_unseen_web_val": pooled_agreement(results, LABELLED_SPLITS),
        "acceptance": dataclasses.asdict(ACCEPTANCE),
        "model_ms_batch1_1thread": timing,
        "measured_on": f"{_cpu_name()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}",
    }
    return dataclasses.replace(
        fp32,
        version=f"{fp32.version}+int8",
        metrics={**fp32.metrics, "int8": measured},
        extra={**fp32.extra, "quantization": calibration},
    )


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def build(
    src: Path,
    out: Path,
    data_root: Path,
    recipe: Recipe = Recipe(),
    seed: int = 0,
) -> tuple[ModelMetadata, list[SplitResult]]:
    """The whole command: fp32 ONNX, calibration, sensitive nodes, int8, comparison, artifact.

    Raises QuantizationRefusedError (nothing written) when the int8 model falls short.
    """
    from training.release.onnx_export import convert

    train_dir = data_root / "imagewoof" / "train"
    if not train_dir.is_dir():
        raise ArtifactError(f"no calibration photos: {train_dir} is not a folder")
    with tempfile.TemporaryDirectory(prefix="breedrec-quantize-") as tmp:
        work = Path(tmp)
        fp32_path, int8_path, ranges = work / "fp32.onnx", work / "int8.onnx", work / "ranges"
        convert(src, fp32_path)
        fp32 = OnnxBackend(fp32_path, threads=1)
        meta = fp32.metadata
        sample = calibration_sample(train_dir, meta, recipe.calibration_photos, seed)
        held_out = calibration_sample(
            train_dir, meta, recipe.sensitivity_photos, seed + 1, frozenset(p for p, _ in sample)
        )
        log.info("calibrating on %d train photos", len(sample))
        rows = (row for batch in preprocessed([p for p, _ in sample], meta) for row in batch)
        quantize(fp32_path, int8_path, rows, recipe.weight_bits, recipe.calibration_method,
                 ranges=ranges)  # fmt: skip
        sensitivity = None
        if recipe.weight_bits == 7 and held_out:
            with_metadata(int8_path, _tagged(meta, 7))
            held_out_rows = np.concatenate(list(preprocessed([p for p, _ in held_out], meta)))
            sensitivity = find_sensitive_nodes(
                fp32_path, int8_path, held_out_rows, ranges, recipe, work
            )
            if sensitivity.float_nodes:
                model = with_float_weights(int8_path, fp32_path, sensitivity.float_nodes)
                int8_path.write_bytes(model)
        calibration = _recipe_record(recipe, meta, sample, held_out, seed, sensitivity)
        # Tagged before measuring, so it runs on the kernels the service will use.
        with_metadata(int8_path, dataclasses.replace(meta, extra={"quantization": calibration}))
        int8 = OnnxBackend(int8_path, threads=1)
        results = compare(fp32, int8, data_root)
        print(comparison_table(results))
        problems = refusals(results)
        if problems:
            raise QuantizationRefusedError("; ".join(problems))
        row = next(preprocessed([sample[0][0]], meta))
        timing = {"fp32": median_ms(fp32, row), "int8": median_ms(int8, row)}
        int8_meta = int8_metadata(meta, calibration, results, timing)
        with_metadata(int8_path, int8_meta)
        OnnxBackend(int8_path, threads=1)  # the finished file loads and its metadata parses
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(dir=out.parent, suffix=".onnx.part")
        os.close(fd)
        try:
            Path(part).write_bytes(int8_path.read_bytes())
            Path(part).chmod(0o644)
            os.replace(part, out)
        finally:
            Path(part).unlink(missing_ok=True)
    return int8_meta, results


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Shipped TorchScript artifact -> accepted static-int8 ONNX artifact."
    )
    parser.add_argument("src", type=Path, help="TorchScript artifact (.pt) with metadata")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="int8 ONNX to write")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="folder with imagewoof/{train,unseen,web,val}/<wnid>/ and ood/",
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
    args = parser.parse_args(argv)
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
    try:
        recipe = Recipe(
            weight_bits=args.weight_bits,
            calibration_method=args.calibration_method,
            calibration_photos=args.calibration_photos,
            max_float_nodes=args.max_float_nodes,
        )
        meta, _ = build(args.src, args.out, args.data_root, recipe, args.seed)
    except QuantizationRefusedError as exc:
        print(f"quantize: refused: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"quantize: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    if args.report:
        report = {
            "artifact": str(args.out),
            "source": str(args.src),
            "version": meta.version,
            "quantization": meta.extra["quantization"],
            **meta.metrics["int8"],
            "command": "python -m training.release.quantize "
            + " ".join(sys.argv[1:] if argv is None else argv),
        }
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s in %.0fs", args.out, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
