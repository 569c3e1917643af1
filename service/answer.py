"""An answer's shape and id: every /predict and every bot reply makes one, with or without
feedback, and a correction's record keeps it."""

from __future__ import annotations

import re
import secrets
from typing import Any

from model.predictor import Prediction, Predictor

# What new_answer_id makes: anything else (a path, say) is no answer id.
ANSWER_ID = re.compile(r"[A-Za-z0-9_-]{16}")


def new_answer_id() -> str:
    """16 URL-safe characters: unguessable, and short enough for Telegram's callback data."""
    return secrets.token_urlsafe(12)


def is_answer_id(text: str) -> bool:
    return ANSWER_ID.fullmatch(text) is not None


def model_summary(predictor: Predictor, chosen_because: str) -> dict[str, str]:
    """What every answer says of the model: which one, on what, and why this artifact."""
    meta = predictor.metadata
    return {
        "name": meta.name,
        "version": meta.version,
        "architecture": meta.architecture,
        "backend": predictor.backend.name,
        "precision": "int8" if meta.extra.get("quantization") else "fp32",
        "chosen_because": chosen_because,
    }


def answer_of(answer_id: str, prediction: Prediction, model: dict[str, str]) -> dict[str, Any]:
    """The answer as /predict and the bot give it, and as a correction's record keeps it;
    ``model`` is the ``model_summary``."""
    return {"id": answer_id, **prediction.to_dict(), "model": model}
