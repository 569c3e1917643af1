"""BreedRecognizer's entry point: gunicorn runs ``app:create_app()`` in each worker.

It puts the parts together: the model, the Flask app (service/factory.py), the bot, and the
ASGI front that serves them (service/front/). What cannot start is said in one CRITICAL line
and the worker exits with code 3, which stops gunicorn instead of restarting it in a loop.
"""

from __future__ import annotations

import logging

from model.backends import ArtifactError
from model.predictor import Predictor
from service.factory import create_app as create_flask_app
from service.front.asgi import Front
from service.http.context import service_context
from service.loading import load_predictor
from service.settings import BOOT_FAILURE_EXIT, Settings, server_settings
from service.telegram_bot import build_bot

log = logging.getLogger("breedrecognizer")


def create_app() -> Front:
    """The worker's ASGI app, with the settings the gunicorn master read."""
    settings = server_settings()
    uri = settings.model.uri or "the shipped ONNX copies"
    try:
        predictor, chosen_because = load_predictor(settings)
    except (ArtifactError, OSError, ValueError) as exc:
        log.critical("refusing to start: cannot load model from %s: %s", uri, exc)
        raise SystemExit(BOOT_FAILURE_EXIT) from None
    try:
        return build_front(predictor, settings, chosen_because)
    except ValueError as exc:
        log.critical("refusing to start: bad configuration: %s", exc)
        raise SystemExit(BOOT_FAILURE_EXIT) from None


def build_front(
    predictor: Predictor, settings: Settings, chosen_because: str = "given to build_front"
) -> Front:
    """The Flask app and the bot around ``predictor``, behind the front."""
    flask_app = create_flask_app(predictor, settings, chosen_because)
    context = service_context(flask_app)
    bot = build_bot(settings, predictor, context.feedback, context.model)
    runtime = None
    if bot is not None:
        runtime, context.readiness["telegram"] = bot
    return Front(flask_app, settings.front, runtime, balance=settings.server.web_concurrency > 1)
