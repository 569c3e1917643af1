"""BreedRecognizer web service: ``create_app()`` builds the Flask app around one loaded model.

Run it under gunicorn with the factory syntax (``gunicorn -c gunicorn.conf.py
'app:create_app()'``) so each worker loads the model after the fork. ``app.app`` also works
(a lazy module attribute), and importing this module never loads a model by itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from model.backends import ArtifactError
from model.predictor import Predictor
from service import metrics
from service.api import api
from service.config import Settings, SettingsError
from service.context import init_context
from service.errors import register_error_handlers
from service.page import page
from service.telegram_bot import init_telegram, telegram

log = logging.getLogger("breedrecognizer")

SERVICE_DIR = Path(__file__).resolve().parent / "service"
# gunicorn's "worker failed to boot" exit code: the master stops instead of respawning the
# worker forever, so a bad MODEL_URI/MODEL_SHA256 means the service refuses to start.
BOOT_FAILURE_EXIT = 3


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(level)


def load_predictor(settings: Settings) -> Predictor:
    """Fetch, verify, load and warm up the model; exit with one clear log line if impossible."""
    try:
        predictor = Predictor.from_uri(
            settings.model_uri,
            sha256=settings.model_sha256,
            threads=settings.model_threads,
            top_k=settings.top_k,
            max_pixels=settings.max_image_pixels,
        )
        predictor.warmup()
    except (ArtifactError, OSError, ValueError) as exc:
        log.critical("refusing to start: cannot load model from %s: %s", settings.model_uri, exc)
        raise SystemExit(BOOT_FAILURE_EXIT) from None
    return predictor


def create_app(predictor: Predictor | None = None, settings: Settings | None = None) -> Flask:
    """Build the app; loads the model from ``MODEL_URI`` unless a predictor is given.

    A given predictor keeps its own answer settings (``top_k``, ``max_pixels``); a loaded one
    takes them from ``settings``.
    """
    try:
        settings = settings or Settings.from_env()
    except SettingsError as exc:
        logging.basicConfig()
        log.critical("refusing to start: bad configuration: %s", exc)
        raise SystemExit(BOOT_FAILURE_EXIT) from None
    configure_logging(settings.log_level)
    if predictor is None:
        predictor = load_predictor(settings)
    else:
        predictor.warmup()

    app = Flask(__name__, root_path=str(SERVICE_DIR))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.json.sort_keys = False

    init_context(app, predictor, settings)
    init_telegram(app, predictor, settings)
    register_error_handlers(app)
    metrics.init_app(app, predictor)
    for blueprint in (api, page, telegram):
        app.register_blueprint(blueprint)
    log.info("ready: serving %s %s", predictor.metadata.name, predictor.metadata.version)
    return app


def __getattr__(name: str) -> Flask:
    """``app.app`` for servers that want a module attribute: built on first access only."""
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
