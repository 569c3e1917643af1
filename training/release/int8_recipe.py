"""How the static-int8 ONNX model is made: calibration sample, ONNX Runtime's quantizer and,
for 7-bit weights, the nodes given back float weights.

Weight precision (``Recipe``): full 8-bit weights by default. On x86 CPUs without VNNI (AVX2,
like the EPYC this runs on) ONNX Runtime's fast u8×s8 kernels add pairs of products in 16
bits, which saturates for such weights, so they run on the exact kernels (see
``model.backends``). 7-bit weights run exactly on the fast kernels; that recipe gives float
weights back to the nodes that suffer most, found on held-out train photos, but for the
shipped model it still lost too much accuracy (see docs/benchmark.md). Needs ``onnx`` and
``onnxruntime.quantization``: build tools, never imported by the service.
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
from model.metadata import ModelMetadata
from model.preprocessing import ImageDecodeError, preprocess_bytes
from training.lab.data import scan_folder

log = logging.getLogger(__name__)

BATCH = 32


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
    with_metadata(eight, tagged(meta, 8))  # so it runs on the kernels serving would use
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


def _batches(rows: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]
