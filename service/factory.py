"""``create_app()``: the Flask app around one loaded model.

It builds the app and nothing else: the entry point (app.py) decides what a failure costs
the process, and gunicorn.conf.py configures logging. Importing this module loads no model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from model.predictor import Predictor
from service.feedback.service import build_feedback
from service.http import request_metrics
from service.http.api import api
from service.http.context import init_context
from service.http.errors import register_error_handlers
from service.http.feedback import feedback
from service.http.limits import init_limits
from service.http.page import page
from service.loading import load_predictor
from service.settings import Settings, load_settings

log = logging.getLogger("breedrecognizer")

SERVICE_DIR = Path(__file__).resolve().parent


def create_app(
    predictor: Predictor | None = None,
    settings: Settings | None = None,
    chosen_because: str = "given to create_app",
) -> Flask:
    """Build the app; loads the model from ``MODEL_URI`` unless a predictor is given.

    A given predictor keeps its own answer settings (``top_k``, decode ``limits``); a loaded one
    takes them from ``settings``. Raises SettingsError, ArtifactError, OSError or ValueError
    (a bad feedback store) when the app cannot be built.
    """
    settings = settings or load_settings()
    if predictor is None:
        predictor, chosen_because = load_predictor(settings)

    app = Flask(__name__, root_path=str(SERVICE_DIR))
    app.config["MAX_CONTENT_LENGTH"] = settings.api.max_upload_bytes
    app.json.sort_keys = False

    wnids = [c.wnid for c in predictor.metadata.classes]
    feedback_service = build_feedback(settings.feedback, settings.state.redis_url, wnids)
    init_context(app, predictor, settings, chosen_because, feedback_service)
    register_error_handlers(app)
    request_metrics.init_app(app, predictor, settings.server.prometheus_multiproc_dir is not None)
    # After the metrics' hooks: a refused request is still timed and counted.
    init_limits(app, settings.limits, settings.state.redis_url)
    for blueprint in (api, feedback, page):
        app.register_blueprint(blueprint)
    log.info("ready: serving %s %s", predictor.metadata.name, predictor.metadata.version)
    return app
