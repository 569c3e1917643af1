"""``create_app()``: the Flask app around one loaded model, its settings read once.

gunicorn runs it in each worker after the fork (``'app:create_app()'``), so every worker
loads its own model; importing this module never loads one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from model.backends import ArtifactError, read_onnx_metadata
from model.decode_budget import DecodeLimits
from model.defaults import FP32_MODEL, INT8_MODEL
from model.precision import choose_precision, cpu_flags
from model.predictor import Predictor
from service.feedback.service import build_feedback
from service.http import request_metrics as metrics
from service.http.api import api
from service.http.context import init_context
from service.http.errors import register_error_handlers
from service.http.feedback import feedback
from service.http.limits import init_limits
from service.http.page import page
from service.http.uploads import UploadRequest
from service.settings import BOOT_FAILURE_EXIT, ModelSettings, Settings, settings_or_exit
from service.telegram_bot import init_telegram, telegram

log = logging.getLogger("breedrecognizer")

SERVICE_DIR = Path(__file__).resolve().parent


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(level)


def choose_artifact(model: ModelSettings) -> tuple[str, str]:
    """The artifact to serve and why: ``MODEL_URI``, else the shipped ONNX copy whose
    precision suits this CPU (``MODEL_PRECISION``, model/precision.py)."""
    if model.uri:
        return model.uri, "MODEL_URI names it"
    choice = choose_precision(model.precision, cpu_flags(), lambda: read_onnx_metadata(INT8_MODEL))
    return str(INT8_MODEL if choice.precision == "int8" else FP32_MODEL), choice.reason


def load_predictor(settings: Settings) -> tuple[Predictor, str]:
    """Fetch, verify, load and warm up the model; exit with one clear log line if impossible.

    Returns the predictor and why this artifact was chosen.
    """
    model = settings.model
    uri = model.uri or "the shipped ONNX copies"
    try:
        uri, reason = choose_artifact(model)
        predictor = Predictor.from_uri(
            uri,
            sha256=model.sha256,
            threads=model.threads,
            top_k=settings.api.top_k,
            limits=DecodeLimits(settings.api.max_image_pixels, settings.api.decode_budget_bytes),
            cache_dir=model.cache_dir,
        )
        predictor.warmup()
    except (ArtifactError, OSError, ValueError) as exc:
        log.critical("refusing to start: cannot load model from %s: %s", uri, exc)
        raise SystemExit(BOOT_FAILURE_EXIT) from None
    log.info("serving %s: %s", uri, reason)
    return predictor, reason


def create_app(predictor: Predictor | None = None, settings: Settings | None = None) -> Flask:
    """Build the app; loads the model from ``MODEL_URI`` unless a predictor is given.

    A given predictor keeps its own answer settings (``top_k``, decode ``limits``); a loaded one
    takes them from ``settings``.
    """
    settings = settings or settings_or_exit()
    configure_logging(settings.api.log_level)
    if predictor is None:
        predictor, reason = load_predictor(settings)
    else:
        predictor.warmup()
        reason = "given to create_app"

    app = Flask(__name__, root_path=str(SERVICE_DIR))
    app.request_class = UploadRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.api.max_upload_bytes
    app.json.sort_keys = False

    wnids = [c.wnid for c in predictor.metadata.classes]
    try:
        feedback_service = build_feedback(settings.feedback, settings.state.redis_url, wnids)
    except ValueError as exc:
        log.critical("refusing to start: bad configuration: %s", exc)
        raise SystemExit(BOOT_FAILURE_EXIT) from None
    init_context(app, predictor, settings, reason, feedback_service)
    init_telegram(app, predictor, settings)
    register_error_handlers(app)
    metrics.init_app(app, predictor, settings.server.prometheus_multiproc_dir is not None)
    # After the metrics' hooks: a refused request is still timed and counted.
    init_limits(app, settings.limits, settings.state.redis_url)
    for blueprint in (api, feedback, page, telegram):
        app.register_blueprint(blueprint)
    log.info("ready: serving %s %s", predictor.metadata.name, predictor.metadata.version)
    return app
