"""How the static-int8 ONNX model is made: calibration sample, ONNX Runtime's quantizer, the
activation ranges (MinMax, Percentile or Entropy) and the nodes given back float weights.

Weight precision (``Recipe``): full 8-bit weights by default. On x86 CPUs without VNNI (plain
AVX2) ONNX Runtime's fast u8×s8 kernels add pairs of products in 16 bits, which saturates for
such weights, so they run on the exact kernels (see ``model.backends``). 7-bit weights run
exactly on the fast kernels; that recipe gives float weights back to the nodes that suffer
most, found on held-out train photos, but for the shipped model it still lost too much
accuracy (see docs/benchmark.md). With 8-bit weights a recipe may also give float weights to
its ``float_nodes`` most sensitive nodes. Which recipe is used is chosen among variants by
``training.release.int8_variants``. Needs ``onnx`` and ``onnxruntime.quantization``: build
tools, never imported by the service.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import tempfile
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.artifact import set_onnx_metadata
from model.backends import ArtifactError, OnnxBackend
from model.metadata import InputQuantization, ModelMetadata
from model.preprocessing import ImageDecodeError, preprocess_bytes
from training.lab.data import scan_folder

log = logging.getLogger(__name__)

BATCH = 32
# Photos of the calibration sample the input-quantized graph must answer bit for bit as the
# graph it came from.
EXACTNESS_PHOTOS = 32


# Histogram options of the calibration methods that have them (ONNX Runtime's names), fixed
# before any variant ran. Percentile: ONNX Runtime's defaults. Entropy: ONNX Runtime's default
# of 128 quantized bins, searched in 1024 histogram bins (its default of 128 bins for 128
# quantized bins leaves nothing to search: the whole range).
HISTOGRAM_OPTIONS: dict[str, dict[str, object]] = {
    "Percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": True},
    "Entropy": {"num_bins": 1024, "num_quantized_bins": 128, "symmetric": False},
}
HISTOGRAM_CHUNK = 10  # calibration rows run through the augmented model at a time


@dataclass(frozen=True)
class Recipe:
    """How the int8 artifact is made; stored in its metadata (``extra.quantization``).

    ``weight_bits`` 8 is the default: with 7 bits the shipped model lost too much
    (docs/benchmark.md lists what was tried). 7-bit weights run exactly on the fast u8×s8
    kernels of CPUs without VNNI (8-bit ones need the slower exact kernels there, see
    ``model.backends``); with 7 bits the nodes that suffer most from the lost bit are found
    on held-out train photos and keep float weights (up to ``max_float_nodes``). With 8 bits
    the ``float_nodes`` most sensitive nodes, found the same way, keep float weights.
    The defaults are the variant ``training.release.int8_variants`` chose for the shipped
    model (results/bench/int8.json).
    """

    weight_bits: int = 8
    calibration_method: str = "Percentile"  # ONNX Runtime CalibrationMethod name
    calibration_photos: int = 300
    sensitivity_photos: int = 300  # train photos outside the calibration sample
    max_float_nodes: int = 8  # 7-bit weights: most nodes left in float
    float_nodes: int = 0  # 8-bit weights: this many most sensitive nodes left in float


# ---------------------------------------------------------------- photos


def calibration_sample(
    train_dir: Path,
    meta: ModelMetadata,
    count: int,
    seed: int,
    taken: frozenset[Path] = frozenset(),
) -> list[tuple[Path, int]]:
    """``count`` train photos, the same number per breed, a seeded sample of sorted lists.

    (photo, index in ``meta.classes``) pairs, from the lab's folder scan. Photos in ``taken``
    (another sample's) are never drawn.
    """
    index = {c.wnid: i for i, c in enumerate(meta.classes)}
    per_class = max(1, count // len(meta.classes))
    everything = [
        (s.path, index[s.wnid])
        for s in scan_folder(train_dir)
        if s.wnid in index and s.path not in taken
    ]
    rng = random.Random(seed)
    sample = []
    for label in range(len(meta.classes)):
        photos = [(p, i) for p, i in everything if i == label]
        sample += rng.sample(photos, min(per_class, len(photos)))
    return sample


def preprocessed(paths: Iterable[Path], meta: ModelMetadata) -> Iterator[np.ndarray]:
    """Batches of calibration rows, made exactly as the service makes its model input."""
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


class _Rows:
    """ONNX Runtime's calibration data reader over preprocessed rows (one photo a call)."""

    def __init__(self, rows: Iterable[np.ndarray]) -> None:
        self.rows = iter(rows)

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self.rows, None)
        return None if row is None else {"input": row[None]}


def _reader(rows: Iterable[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Rows(_Rows, CalibrationDataReader):
        pass

    return Rows(rows)


def histogram_ranges(prepared: Path, rows: Iterable[np.ndarray], method: str, ranges: Path) -> None:
    """Activation ranges by a histogram method (``HISTOGRAM_OPTIONS``), saved to ``ranges``.

    ONNX Runtime's histogram calibrators keep every intermediate output of the rows given to
    one call in memory, so rows go in ``HISTOGRAM_CHUNK`` at a time and the histograms merge.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # as quantize_static's
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(
            prepared,
            op_types,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod[method],
            extra_options=dict(HISTOGRAM_OPTIONS[method]),
        )
        chunk: list[np.ndarray] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == HISTOGRAM_CHUNK:
                calibrator.collect_data(_reader(chunk))
                chunk = []
        if chunk:
            calibrator.collect_data(_reader(chunk))
        save_tensors_data(calibrator.compute_data(), ranges)
        del calibrator


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
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, got {weight_bits}")
    if method != "MinMax" and method not in HISTOGRAM_OPTIONS:
        raise ValueError(f"calibration method must be MinMax or one of {sorted(HISTOGRAM_OPTIONS)}")

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        reader = _reader(calibration) if calibration is not None else None
        if method in HISTOGRAM_OPTIONS and not (ranges and ranges.is_file()):
            if calibration is None:
                raise ValueError("no calibration rows and no calibrated ranges")
            ranges = ranges or Path(tmp) / "ranges.json"
            histogram_ranges(prepared, calibration, method, ranges)
            reader = None
        quantize_static(
            str(prepared),
            str(out),
            reader,
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


def with_metadata(path: Path, meta: ModelMetadata) -> None:
    """Store ``meta`` in the ONNX file at ``path`` (a working copy: rewritten in place)."""
    import onnx

    proto = onnx.load(str(path))
    set_onnx_metadata(proto, meta)
    proto.producer_name = "breedrecognizer training.release.quantize"
    onnx.save(proto, str(path))


def tagged(meta: ModelMetadata, weight_bits: int) -> ModelMetadata:
    """``meta`` saying only its weight precision: enough to run on the kernels serving uses."""
    return dataclasses.replace(meta, extra={"quantization": {"weight_bits": weight_bits}})


def _outputs(backend: OnnxBackend, batches: Iterable[np.ndarray]) -> np.ndarray:
    return np.concatenate([backend.run(batch) for batch in batches])


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


def rank_sensitive_nodes(
    fp32_path: Path, qdq: Path, rows: np.ndarray, want: np.ndarray | None = None
) -> tuple[list[str], dict[str, float], float]:
    """The quantized nodes of ``qdq``, most sensitive first, with each one's gain.

    Measured on ``rows`` (train photos not used for calibration; never the test splits): each
    node gets its float weight back on its own and is ranked by how much closer to fp32 that
    brings the outputs (``distance``). Also returns ``qdq``'s own distance.
    """
    meta = OnnxBackend(fp32_path, threads=1).metadata
    if want is None:
        want = _outputs(OnnxBackend(fp32_path, threads=None), _batches(rows))

    def measure(model: Path | bytes) -> float:
        return distance(want, _outputs(OnnxBackend(model, threads=None), _batches(rows)), meta)

    base = measure(qdq)
    nodes = quantized_weight_nodes(qdq)
    gains = {n: base - measure(with_float_weights(qdq, fp32_path, [n])) for n in nodes}
    return sorted(nodes, key=lambda n: -gains[n]), gains, base


def find_sensitive_nodes(
    fp32_path: Path, qdq: Path, rows: np.ndarray, ranges: Path, recipe: Recipe, workdir: Path
) -> Sensitivity:
    """Nodes to give back float weights so ``qdq`` (7-bit) ends as close to fp32 as 8-bit.

    Nodes are ranked by ``rank_sensitive_nodes`` on ``rows``; then the top ones get their
    float weights back, one more at a time, until the distance is at most the 8-bit model's
    (or ``recipe.max_float_nodes``).
    """
    fp32 = OnnxBackend(fp32_path, threads=None)
    meta = fp32.metadata
    want = _outputs(fp32, _batches(rows))

    def measure(model: Path | bytes) -> float:
        return distance(want, _outputs(OnnxBackend(model, threads=None), _batches(rows)), meta)

    eight = workdir / "eight.onnx"
    quantize(fp32_path, eight, None, 8, recipe.calibration_method, ranges=ranges)
    with_metadata(eight, tagged(meta, 8))  # so it runs on the kernels serving would use
    target, base = measure(eight), measure(qdq)
    log.info("distance to fp32: %.5f with 8-bit weights, %.5f with %d-bit", target, base,
             recipe.weight_bits)  # fmt: skip
    if base <= target or recipe.max_float_nodes == 0:
        return Sensitivity([], target, base, base)
    ranked, _, _ = rank_sensitive_nodes(fp32_path, qdq, rows, want)
    chosen, count = base, 0
    while count < min(recipe.max_float_nodes, len(ranked)) and chosen > target:
        count += 1
        chosen = measure(with_float_weights(qdq, fp32_path, ranked[:count]))
        log.info("float weights for %d node(s): distance %.5f", count, chosen)
    return Sensitivity(ranked[:count], target, base, chosen)


def most_sensitive_nodes(fp32_path: Path, qdq: Path, rows: np.ndarray, count: int) -> Sensitivity:
    """8-bit recipe: the ``count`` most sensitive nodes of ``qdq`` (``rank_sensitive_nodes``)."""
    fp32 = OnnxBackend(fp32_path, threads=None)
    want = _outputs(fp32, _batches(rows))
    ranked, _, base = rank_sensitive_nodes(fp32_path, qdq, rows, want)
    chosen = ranked[:count]
    mixed = with_float_weights(qdq, fp32_path, chosen)
    after = distance(
        want, _outputs(OnnxBackend(mixed, threads=None), _batches(rows)), fp32.metadata
    )
    log.info("float weights for %s: distance %.5f -> %.5f", chosen, base, after)
    return Sensitivity(chosen, base, base, after)


def _batches(rows: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


# ---------------------------------------------------------------- the whole recipe


def make_int8(
    fp32_path: Path, int8_path: Path, train_dir: Path, recipe: Recipe, seed: int, work: Path
) -> tuple[dict[str, object], list[tuple[Path, int]]]:
    """Quantize ``fp32_path`` into ``int8_path`` by ``recipe``.

    The file carries the fp32 metadata with version ``<version>+int8`` and how it was made
    (``extra.quantization``), so it runs on the kernels serving will use. Returns that
    record and the calibration sample.
    """
    meta = OnnxBackend(fp32_path, threads=1).metadata
    sample = calibration_sample(train_dir, meta, recipe.calibration_photos, seed)
    held_out = calibration_sample(
        train_dir, meta, recipe.sensitivity_photos, seed + 1, frozenset(p for p, _ in sample)
    )
    log.info("calibrating on %d train photos (%s)", len(sample), recipe.calibration_method)
    rows = (row for batch in preprocessed([p for p, _ in sample], meta) for row in batch)
    ranges = work / "ranges.json"
    quantize(fp32_path, int8_path, rows, recipe.weight_bits, recipe.calibration_method,
             ranges=ranges)  # fmt: skip
    sensitivity = None
    wants_float = recipe.max_float_nodes if recipe.weight_bits == 7 else recipe.float_nodes
    if wants_float and held_out:
        with_metadata(int8_path, tagged(meta, recipe.weight_bits))
        held_out_rows = np.concatenate(list(preprocessed([p for p, _ in held_out], meta)))
        if recipe.weight_bits == 7:
            sensitivity = find_sensitive_nodes(
                fp32_path, int8_path, held_out_rows, ranges, recipe, work
            )
        else:
            sensitivity = most_sensitive_nodes(
                fp32_path, int8_path, held_out_rows, recipe.float_nodes
            )
        if sensitivity.float_nodes:
            int8_path.write_bytes(with_float_weights(int8_path, fp32_path, sensitivity.float_nodes))
    calibration = recipe_record(recipe, meta, sample, held_out, seed, sensitivity)
    with_metadata(int8_path, tagged(meta, recipe.weight_bits))
    float_input = int8_path.read_bytes()
    quantization = take_input_quantization(int8_path)
    int8_meta = dataclasses.replace(
        meta,
        version=f"{meta.version}+int8",
        preprocessing=dataclasses.replace(meta.preprocessing, input_quantization=quantization),
        extra={**meta.extra, "quantization": calibration},
    )
    with_metadata(int8_path, int8_meta)
    photos = [p for p, _ in sample[:EXACTNESS_PHOTOS]]
    want = _outputs(OnnxBackend(float_input, threads=1), preprocessed(photos, meta))
    got = _outputs(OnnxBackend(int8_path, threads=1), preprocessed(photos, int8_meta))
    if not np.array_equal(want, got):
        raise ArtifactError("quantizing the input in the preprocessing changed the outputs")
    return calibration, sample


def take_input_quantization(path: Path) -> InputQuantization:
    """Make the int8 graph at ``path`` take its input already quantized (rewritten in place).

    Its first node, the QuantizeLinear of the normalised photo, costs ONNX Runtime more on
    each new photo than in a loop over one, and makes the model read float rows four times
    the size; the preprocessing's lookup table does the same arithmetic at no cost
    (model/preprocessing.py). Returns that node's scale and zero point.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    (graph_input,) = graph.input
    readers = [node for node in graph.node if graph_input.name in node.input]
    if len(readers) != 1 or readers[0].op_type != "QuantizeLinear":
        raise ArtifactError("the int8 graph's input is not read by one QuantizeLinear alone")
    quantize_node = readers[0]
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    scale, zero_point = (constants[name] for name in quantize_node.input[1:3])
    if scale.size != 1 or zero_point.dtype != np.uint8:
        raise ArtifactError("the int8 graph's input quantization is not per-tensor uint8")
    graph.node.remove(quantize_node)
    for node in graph.node:
        for at, name in enumerate(node.input):
            if name == quantize_node.output[0]:
                node.input[at] = graph_input.name
    graph_input.type.tensor_type.elem_type = TensorProto.UINT8
    onnx.save(proto, str(path))
    return InputQuantization(scale=float(scale), zero_point=int(zero_point))


def recipe_record(
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
    if recipe.calibration_method in HISTOGRAM_OPTIONS:
        record["calibration_options"] = dict(HISTOGRAM_OPTIONS[recipe.calibration_method])
    if sensitivity is not None:
        record["float_nodes"] = sensitivity.float_nodes
        record["sensitivity"] = {
            "photos": len(held_out),
            "selection": f"train photos outside the calibration sample, "
            f"{len(held_out) // len(meta.classes)} per breed: random.Random({seed + 1})",
            "distance": "mean KL divergence from fp32, breed head + ImageNet head",
            "all_quantized": round(sensitivity.all_quantized, 6),
            "chosen": round(sensitivity.chosen, 6),
        }
        if recipe.weight_bits == 7:
            record["sensitivity"]["target_8bit"] = round(sensitivity.target, 6)
            record["sensitivity"]["max_float_nodes"] = recipe.max_float_nodes
        else:
            record["sensitivity"]["rule"] = (
                f"the {recipe.float_nodes} nodes whose float weights alone bring the outputs "
                "closest to fp32"
            )
    return record
