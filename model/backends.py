"""Inference backends behind one tiny interface: float32 NCHW batch in, logits out.

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

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """The model artifact is missing, corrupt or lacks the metadata the service needs."""


class Backend(Protocol):
    metadata: ModelMetadata
    name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def default_threads() -> int:
    """Intra-op threads for this process: MODEL_THREADS, else all cores (one process)."""
    value = os.environ.get("MODEL_THREADS", "")
    return int(value) if value.strip() else max(1, os.cpu_count() or 1)


class TorchScriptBackend:
    """Runs a TorchScript module saved with the metadata in ``_extra_files``."""

    name = "torchscript"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import torch

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


def onnx_session_options(threads: int):
    """ONNX Runtime settings for one serving process among several on the same cores.

    All graph optimisations (for a QDQ int8 graph this is what fuses QuantizeLinear /
    DequantizeLinear pairs into integer QLinearConv/QGemm kernels); ``threads`` intra-op
    threads (MODEL_THREADS, i.e. cores ÷ workers); operators run one after another (no
    inter-op pool); and idle pool threads sleep instead of spinning, so a worker waiting for
    its next request never burns the core another worker is computing on.

    ``session.x64quantprecision``: on x86 CPUs without VNNI (AVX2, like the EPYC these
    figures come from) the fast u8×s8 kernels add pairs of products in 16 bits, which
    saturates for full-range int8 weights and changes answers; this makes ONNX Runtime use
    its exact u8×u8 kernels (no effect on float graphs; CPUs with VNNI are exact anyway).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.add_session_config_entry("session.x64quantprecision", "1")
    return options


class OnnxBackend:
    """Runs an ONNX model through ONNX Runtime; metadata lives in ``metadata_props``."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = onnx_session_options(threads or default_threads())
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ArtifactError(f"cannot load ONNX artifact {path}: {exc}") from exc
        props = self._session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise ArtifactError(f"{path} has no {METADATA_KEY} metadata; export it with the lab")
        self.metadata = _parse_metadata(props[METADATA_KEY], path)
        self._input = self._session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]


def _parse_metadata(text: str | bytes, path: Path) -> ModelMetadata:
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
