"""``create_app()``: the Flask app around one loaded model, its settings read once.

gunicorn runs it in each worker after the fork (``'app:create_app()'``), so every worker
loads its own model; importing this module never loads one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from model.backends import ArtifactError
from model.predictor import Predictor
from service.http import metrics
from service.http.api import api
from service.http.context import init_context
from service.http.errors import register_error_handlers
from service.http.page import page
from service.settings import BOOT_FAILURE_EXIT, Settings, settings_or_exit
from service.telegram_bot import init_telegram, telegram

log = logging.getLogger("breedrecognizer")

SERVICE_DIR = Path(__file__).resolve().parent


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(level)


def load_predictor(settings: Settings) -> Predictor:
    """Fetch, verify, load and warm up the model; exit with one clear log line if impossible."""
    model = settings.model
    try:
        predictor = Predictor.from_uri(
            model.uri,
            sha256=model.sha256,
            threads=model.threads,
            top_k=settings.api.top_k,
            max_pixels=settings.api.max_image_pixels,
            cache_dir=model.cache_dir,
        )
        predictor.warmup()
    except (ArtifactError, OSError, ValueError) as exc:
        log.critical("refusing to start: cannot load model from %s: %s", model.uri, exc)
        raise SystemExit(BOOT_FAILURE_EXIT) from None
    return predictor


def create_app(predictor: Predictor | None = None, settings: Settings | None = None) -> Flask:
    """Build the app; loads the model from ``MODEL_URI`` unless a predictor is given.

    A given predictor keeps its own answer settings (``top_k``, ``max_pixels``); a loaded one
    takes them from ``settings``.
    """
    settings = settings or settings_or_exit()
    configure_logging(settings.api.log_level)
    if predictor is None:
        predictor = load_predictor(settings)
    else:
        predictor.warmup()

    app = Flask(__name__, root_path=str(SERVICE_DIR))
    app.config["MAX_CONTENT_LENGTH"] = settings.api.max_upload_bytes
    app.json.sort_keys = False

    init_context(app, predictor, settings)
    init_telegram(app, predictor, settings)
    register_error_handlers(app)
    metrics.init_app(app, predictor, settings.server.prometheus_multiproc_dir is not None)
    for blueprint in (api, page, telegram):
        app.register_blueprint(blueprint)
    log.info("ready: serving %s %s", predictor.metadata.name, predictor.metadata.version)
    return app
