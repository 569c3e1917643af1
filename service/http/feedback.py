"""The ``feedback`` blueprint: POST /feedback, a user's correction of a recent answer.

One label per answer: a different label replaces the earlier one (201, ``replaced``), the same
label again changes nothing (200, ``stored`` false).
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, jsonify, request

from service.feedback.recent import RecentUnavailableError
from service.feedback.service import BadLabelError, UnknownAnswerError
from service.feedback.store import NONE_LABEL, FeedbackStoreError, Saved
from service.http.context import service_context
from service.http.errors import ApiError

log = logging.getLogger(__name__)

feedback = Blueprint("feedback", __name__)

# {"id": "<16 characters>", "label": "<wnid>"} is about 50 bytes; anything this big is not one.
MAX_FEEDBACK_BYTES = 4096


def _fields() -> tuple[str, str]:
    """(answer id, label) from the JSON body, or ApiError naming what is wrong."""
    if (request.content_length or 0) > MAX_FEEDBACK_BYTES:
        raise ApiError(413, "payload_too_large", f"feedback is at most {MAX_FEEDBACK_BYTES} bytes")
    data = request.get_data(cache=False)
    if len(data) > MAX_FEEDBACK_BYTES:
        raise ApiError(413, "payload_too_large", f"feedback is at most {MAX_FEEDBACK_BYTES} bytes")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(
            400, "not_json", 'send JSON: {"id": "<answer id>", "label": "<wnid>" | "none"}'
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "not_json", "the body must be a JSON object with id and label")
    answer_id, label = body.get("id"), body.get("label")
    if not isinstance(answer_id, str) or not answer_id:
        raise ApiError(400, "missing_id", "id must be the id of a /predict answer")
    if not isinstance(label, str) or not label:
        raise ApiError(400, "missing_label", f"label must be a breed's wnid or {NONE_LABEL!r}")
    return answer_id, label


@feedback.post("/feedback")
def submit_feedback():
    context = service_context()
    if context.feedback is None:
        raise ApiError(404, "feedback_off", "feedback is off on this server (FEEDBACK_URI)")
    answer_id, label = _fields()
    try:
        saved = context.feedback.correct(answer_id, label)
    except BadLabelError:
        wnids = ", ".join(c.wnid for c in context.predictor.metadata.classes)
        raise ApiError(
            400,
            "bad_label",
            f"label must be one of the breeds {wnids}, the wnid of another dog breed, wild "
            f"canid or cat the service names (the Feedback schema of /openapi.json lists them) "
            f"or {NONE_LABEL!r}, got {label!r}",
        ) from None
    except UnknownAnswerError:
        raise ApiError(
            404, "unknown_answer", "no recent answer has this id (or it is no longer kept)"
        ) from None
    except (FeedbackStoreError, RecentUnavailableError) as exc:
        log.error("feedback for %s not stored: %s", answer_id, exc)
        raise ApiError(503, "feedback_unavailable", "feedback cannot be stored right now") from None
    stored = saved is not Saved.SAME
    body = {"id": answer_id, "label": label, "stored": stored, "replaced": saved is Saved.REPLACED}
    return jsonify(body), 201 if stored else 200
