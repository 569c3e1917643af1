"""Which artifact this server serves, and loading it: fetched, verified, warmed up."""

from __future__ import annotations

import logging

from model.backends import read_onnx_metadata
from model.decode_budget import DecodeLimits
from model.defaults import FP32_MODEL, INT8_MODEL
from model.precision import choose_precision, cpu_flags
from model.predictor import Predictor
from service.settings import ModelSettings, Settings

log = logging.getLogger("breedrecognizer")


def choose_artifact(model: ModelSettings) -> tuple[str, str]:
    """The artifact to serve and why: ``MODEL_URI``, else the shipped ONNX copy whose
    precision suits this CPU (``MODEL_PRECISION``, model/precision.py)."""
    if model.uri:
        return model.uri, "MODEL_URI names it"
    choice = choose_precision(model.precision, cpu_flags(), lambda: read_onnx_metadata(INT8_MODEL))
    return str(INT8_MODEL if choice.precision == "int8" else FP32_MODEL), choice.reason


def load_predictor(settings: Settings) -> tuple[Predictor, str]:
    """The loaded, warmed-up predictor and why this artifact was chosen.

    Raises ArtifactError, OSError or ValueError when the model cannot be served.
    """
    uri, reason = choose_artifact(settings.model)
    predictor = Predictor.from_uri(
        uri,
        sha256=settings.model.sha256,
        threads=settings.model_threads(),
        top_k=settings.api.top_k,
        limits=DecodeLimits(settings.api.max_image_pixels, settings.api.decode_budget_bytes),
        cache_dir=settings.model.cache_dir,
    )
    predictor.warmup()
    log.info("serving %s: %s", uri, reason)
    return predictor, reason
