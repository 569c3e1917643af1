"""What every blueprint reads from the app: the loaded predictor, the settings, the model card.

``create_app()`` stores one ``ServiceContext`` in ``app.extensions``; views read it through
``service_context()`` instead of closing over objects, so routes live in plain blueprints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

from model.predictor import Predictor
from service.answer import model_summary
from service.feedback.service import Feedback
from service.settings import Settings

EXTENSION_KEY = "breedrecognizer"


@dataclass(frozen=True)
class ServiceContext:
    predictor: Predictor
    settings: Settings
    model: dict[str, str]  # the model summary every answer carries
    feedback: Feedback | None = None  # None: FEEDBACK_URI unset, feedback off
    # Extra parts of /readyz by name (e.g. the bot's shared store): each returns its state.
    readiness: dict[str, Callable[[], dict[str, object]]] = field(default_factory=dict)


def init_context(
    app: Flask,
    predictor: Predictor,
    settings: Settings,
    chosen_because: str,
    feedback: Feedback | None = None,
) -> ServiceContext:
    model = model_summary(predictor, chosen_because)
    context = ServiceContext(predictor, settings, model, feedback)
    app.extensions[EXTENSION_KEY] = context
    return context


def service_context(app: Flask | None = None) -> ServiceContext:
    return (app or current_app).extensions[EXTENSION_KEY]
