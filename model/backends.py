"""Inference backends behind one tiny interface: preprocessed NCHW batch in, logits out.

The artifact's file type picks the backend: ``.pt``/``.ts`` TorchScript, ``.onnx`` ONNX
Runtime. Both read the same metadata, so callers never care which one runs.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np

from model.metadata import METADATA_KEY, ModelMetadata
from model.precision import cpu_flags, int8_dot_product
from model.preprocessing import quantize_input

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """The model artifact is missing, corrupt or lacks the metadata the service needs."""


class Backend(Protocol):
    metadata: ModelMetadata
    name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def default_threads() -> int:
    """Intra-op threads when the caller names none: all cores (one process on the machine)."""
    return max(1, os.cpu_count() or 1)


class TorchScriptBackend:
    """Runs a TorchScript module saved with the metadata in ``_extra_files``."""

    name = "torchscript"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import torch
        except ImportError:  # the ONNX-only install (requirements.txt) has no torch
            raise ArtifactError(
                "TorchScript artifacts need torch: pip install -r requirements-torchscript.txt"
            ) from None

        torch.set_num_threads(threads or default_threads())
        extra = {METADATA_KEY: ""}
        try:
            with warnings.catch_warnings():  # "torch.jit.load is deprecated" on every start
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:  # torch raises RuntimeError/ValueError/zipfile errors alike
            raise ArtifactError(f"cannot load TorchScript artifact {path}: {exc}") from exc
        if not extra[METADATA_KEY]:
            raise ArtifactError(f"{path} has no {METADATA_KEY} metadata; export it with the lab")
        self.metadata = _parse_metadata(extra[METADATA_KEY], path)
        self.module.eval()
        self._torch = torch

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(batch)).float().numpy()


def onnx_session_options(threads: int, exact_int8: bool = True):
    """ONNX Runtime settings for one serving process among several on the same cores.

    All graph optimisations (for a QDQ int8 graph this is what fuses QuantizeLinear /
    DequantizeLinear pairs into integer QLinearConv/QGemm kernels); ``threads`` intra-op
    threads (the service passes MODEL_THREADS, i.e. cores ÷ workers); operators run one
    after another (no inter-op pool); and idle pool threads sleep instead of spinning, so a
    worker waiting for its next request never burns the core another worker is computing on.

    ``exact_int8`` (``session.x64quantprecision``): on x86 CPUs without VNNI (plain AVX2) the
    fast u8×s8 kernels add pairs of products in 16 bits, which saturates for full-range 8-bit
    weights and changes answers; the option makes ONNX Runtime use its exact but slower u8×u8
    kernels. Where the fast kernels are exact (``fast_int8_is_exact``: VNNI, or 7-bit
    weights) they are used.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.add_session_config_entry("session.x64quantprecision", "1" if exact_int8 else "0")
    return options


def fast_int8_is_exact(meta: ModelMetadata) -> bool:
    """True where the fast int8 kernels give exact results for this artifact.

    On CPUs with int8 dot-product instructions (VNNI, AMX) they add in 32 bits: always
    exact. Elsewhere only 7-bit weights cannot saturate their 16-bit sums
    (``training.release.quantize`` records ``weight_bits`` in ``extra.quantization``); every
    other artifact there runs on the exact kernels.
    """
    if int8_dot_product(cpu_flags()) is not None:
        return True
    quantization = meta.extra.get("quantization")
    return isinstance(quantization, dict) and quantization.get("weight_bits") == 7


class OnnxBackend:
    """Runs an ONNX model through ONNX Runtime; metadata lives in ``metadata_props``."""

    name = "onnxruntime"

    def __init__(self, path: Path | bytes, threads: int | None = None) -> None:
        """``path``: the artifact's file, or a whole ONNX model in memory (the lab's checks)."""
        # Opened once where the CPU decides alone (a second session's memory stays in the
        # worker's heap); only 7-bit weights on a CPU without int8 dot products need the
        # metadata first, and are opened again with the fast kernels.
        dot_product = int8_dot_product(cpu_flags()) is not None
        self._session = self._open(path, threads, exact_int8=not dot_product)
        self.metadata = _session_metadata(self._session, path)
        if not dot_product and fast_int8_is_exact(self.metadata):
            self._session = self._open(path, threads, exact_int8=False)
        graph_input = self._session.get_inputs()[0]
        self._input = graph_input.name
        self._quantization = self.metadata.preprocessing.input_quantization
        if (graph_input.type == "tensor(uint8)") != (self._quantization is not None):
            where = path if isinstance(path, Path) else "in-memory model"
            raise ArtifactError(
                f"{where} takes {graph_input.type} input, but its metadata says "
                f"input_quantization {self._quantization}"
            )

    @staticmethod
    def _open(path: Path | bytes, threads: int | None, exact_int8: bool):
        return _onnx_session(path, onnx_session_options(threads or default_threads(), exact_int8))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``batch``: rows as the artifact's preprocessing gives them. Normalised float rows
        (the lab's probes) are quantized here when the model takes uint8 input."""
        if self._quantization is not None and batch.dtype != np.uint8:
            batch = quantize_input(batch, self._quantization)
        return self._session.run(None, {self._input: batch})[0]


def read_onnx_metadata(path: Path) -> ModelMetadata:
    """An ONNX artifact's metadata without a serving session: no graph optimisation and no
    prepacked weights, so a worker that only needs to know about a copy it will not serve
    (the int8 one, to choose a precision) keeps little of it in memory."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.disable_prepacking", "1")
    return _session_metadata(_onnx_session(path, options), path)


def _onnx_session(path: Path | bytes, options):
    """An ONNX Runtime session on the CPU; every load failure is an ArtifactError."""
    import onnxruntime as ort

    model = path if isinstance(path, bytes) else str(path)
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        where = path if isinstance(path, Path) else "in-memory model"
        raise ArtifactError(f"cannot load ONNX artifact {where}: {exc}") from exc


def _session_metadata(session, path: Path | bytes) -> ModelMetadata:
    where = path if isinstance(path, Path) else "in-memory model"
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ArtifactError(f"{where} has no {METADATA_KEY} metadata; export it with the lab")
    return _parse_metadata(props[METADATA_KEY], where)


def _parse_metadata(text: str | bytes, path: Path | str) -> ModelMetadata:
    try:
        return ModelMetadata.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} carries unreadable metadata: {exc}") from exc


def load_backend(path: str | Path, threads: int | None = None) -> Backend:
    """Open an artifact with the backend its file type calls for."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model artifact not found: {path}")
    if path.suffix == ".onnx":
        return OnnxBackend(path, threads)
    return TorchScriptBackend(path, threads)
