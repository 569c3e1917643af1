"""Derive the fp32 ONNX artifact from the shipped TorchScript artifact, deterministically.

The TorchScript ``.pt`` is what the lab ships; the fp32 ``.onnx`` made from it here is the
committed fp32 copy (``model/efficientnet_lite0_imagewoof.onnx``, the same bytes when made
again), one of the two the service chooses from, and what the static-int8 copy is quantized
from (``training.release.quantize``). Same graph, same
metadata, outputs checked against TorchScript.

    python -m training.release.onnx_export model/efficientnet_lite0_imagewoof.pt /tmp/model.onnx

Uses torch's TorchScript-based exporter (``dynamo=False``): the torch.export-based one
cannot take a loaded ``ScriptModule``. Needs ``torch`` and ``onnx``; the server does not.

The TF-style "same" padding of EfficientNet-Lite is traced as run-time arithmetic on the
input shape (Shape → Gather → Ceil → … → Pad). The artifact's input size is fixed by its
metadata, so those pads are pinned to constants (checked equal for two batch sizes); ONNX
Runtime then folds every Pad into its Conv and drops the NCHWc reorders around it, ~10%
less model time. The batch dimension stays dynamic.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from model.artifact import atomic_write, set_onnx_metadata
from model.backends import ArtifactError, OnnxBackend, TorchScriptBackend

log = logging.getLogger(__name__)

# Largest |logit difference| allowed between the two runtimes (float32, different kernels).
TOLERANCE = 1e-3
OPSET = 17


def convert(src: Path, dst: Path, tolerance: float = TOLERANCE) -> float:
    """Export ``src`` (TorchScript with metadata) to ``dst`` (ONNX, dynamic batch) and verify.

    Returns the largest absolute logit difference seen on the check batch. The file is
    written to a temporary name and renamed only once verified, so a reader never sees a
    half-written or unverified artifact.
    """
    import onnx
    import torch

    reference = TorchScriptBackend(src, threads=1)
    metadata = reference.metadata
    size = metadata.preprocessing.input_size
    example = torch.zeros(1, 3, size, size)
    with atomic_write(dst) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation notices
            torch.onnx.export(
                reference.module,
                (example,),
                str(tmp),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        set_onnx_metadata(proto, metadata)
        proto.producer_name = "breedrecognizer training.release.onnx_export"
        pinned = pin_static_pads(proto, size)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        log.info("pinned %d run-time Pad sizes to constants for %dx%d input", pinned, size, size)
        err = verify(reference, OnnxBackend(tmp, threads=1), size)
        if err > tolerance:
            raise ArtifactError(f"ONNX output differs from TorchScript by {err:.2e} > {tolerance}")
    return err


def pin_static_pads(proto, size: int) -> int:
    """Replace Pad amounts computed at run time by their values for ``size``×``size`` input.

    The values are read by running the graph itself (ONNX Runtime, no optimisation) on
    zero batches of 1 and 2 images; a pad that depended on the batch size is an error.
    Nodes left without readers (the shape arithmetic) are removed.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    graph = proto.graph
    constants = {init.name for init in graph.initializer}
    targets = sorted(
        {n.input[1] for n in graph.node if n.op_type == "Pad" and len(n.input) > 1} - constants
    )
    if not targets:
        return 0
    probe = copy.deepcopy(proto)
    for name in targets:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = graph.input[0].name
    one, two = (
        session.run(targets, {feed: np.zeros((n, 3, size, size), np.float32)}) for n in (1, 2)
    )
    for name, a, b in zip(targets, one, two, strict=True):
        if not np.array_equal(a, b):
            raise ArtifactError(f"Pad amounts {name} depend on the batch size; cannot pin them")
        pinned = f"{name}_pinned"
        graph.initializer.append(numpy_helper.from_array(a.astype(np.int64), pinned))
        for node in graph.node:
            if node.op_type == "Pad" and node.input[1] == name:
                node.input[1] = pinned
    _drop_unread_nodes(graph)
    return len(targets)


def _drop_unread_nodes(graph) -> None:
    while True:
        read = {name for node in graph.node for name in node.input}
        read |= {out.name for out in graph.output}
        unread = [n for n in graph.node if not any(o in read for o in n.output)]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)


def verify(reference: TorchScriptBackend, candidate: OnnxBackend, size: int) -> float:
    """Max |logit diff| on a fixed batch of noise and flat images (batch 1 and 3)."""
    if candidate.metadata != reference.metadata:
        raise ArtifactError("ONNX metadata differs from the TorchScript metadata")
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((2, 3, size, size), dtype=np.float32)
    batches = [noise[:1], np.concatenate([noise, np.zeros((1, 3, size, size), np.float32)])]
    err = 0.0
    for batch in batches:
        want, got = reference.run(batch), candidate.run(batch)
        if want.shape != got.shape:
            raise ArtifactError(f"ONNX output shape {got.shape} != TorchScript {want.shape}")
        if not np.array_equal(want.argmax(axis=1), got.argmax(axis=1)):
            raise ArtifactError("ONNX and TorchScript disagree on the top class")
        err = max(err, float(np.abs(want - got).max()))
    return err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TorchScript artifact → verified ONNX artifact.")
    parser.add_argument("src", type=Path, help="TorchScript artifact (.pt) with metadata")
    parser.add_argument("dst", type=Path, help="ONNX artifact to write (.onnx)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.dst.suffix != ".onnx":
        print(f"convert_onnx: {args.dst} must end in .onnx", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        err = convert(args.src, args.dst, args.tolerance)
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"convert_onnx: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    log.info(
        "wrote %s from %s in %.1fs (max |logit diff| vs TorchScript %.1e)",
        args.dst,
        args.src,
        time.perf_counter() - started,
        err,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
