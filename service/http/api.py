"""The ``api`` blueprint: POST /predict, GET /healthz, GET /readyz and GET /openapi.json."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, jsonify, request

from model.preprocessing import ImageDecodeError
from service.answer import answer_of, new_answer_id
from service.http.context import service_context
from service.http.errors import ApiError
from service.http.openapi import load_openapi
from service.http.uploads import extract_image, parse_top_k
from service.metrics import observe_prediction

log = logging.getLogger(__name__)

api = Blueprint("api", __name__)

# Decoder verdicts → HTTP status. Pixel-count limits (bombs, absurd sizes) are "too large".
DECODE_STATUS = {
    "empty_image": 400,
    "image_too_large": 413,
    "too_many_pixels": 422,
    "image_too_small": 422,
    "not_an_image": 422,
    "corrupt_image": 422,
}


@api.record_once
def _parse_openapi(_state) -> None:
    """Parse the contract when the app is built, so a broken document stops the start."""
    load_openapi()


@api.get("/healthz")
def healthz():
    """Liveness: the process answers. It does not touch the model."""
    return jsonify({"status": "ok"})


@api.get("/readyz")
def readyz():
    """Readiness: routes exist only once the model is loaded and warmed up (create_app).

    Parts that only some routes need (the bot's shared store) report their state here
    without making the whole service unready: /predict works without them.
    """
    context = service_context()
    body: dict[str, object] = {"status": "ready", "model": context.model}
    body.update({name: check() for name, check in context.readiness.items()})
    return jsonify(body)


@api.get("/openapi.json")
def openapi_document():
    return jsonify(load_openapi())


@api.post("/predict")
def predict():
    context = service_context()
    predictor = context.predictor
    top_k = parse_top_k(request.args.get("top_k"), predictor.top_k)
    data = extract_image(request)
    started = time.perf_counter()
    try:
        photo = predictor.decode(data)
    except ImageDecodeError as exc:
        raise ApiError(DECODE_STATUS.get(exc.code, 422), exc.code, exc.message) from None
    prediction = predictor.predict_image(photo, top_k)
    seconds = time.perf_counter() - started
    observe_prediction(prediction, seconds)
    # DEBUG, not INFO: the access log already records every request; this line would
    # cost a formatted record per photo on the hot path.
    log.debug(
        "predicted %s (known=%s, %.3f) for %d bytes in %.1f ms",
        prediction.top_k[0].name,
        prediction.known,
        prediction.top_k[0].confidence,
        len(data),
        seconds * 1000,
    )
    body = answer_of(new_answer_id(), prediction, context.model)
    if context.feedback is not None:
        context.feedback.keep(body, photo)
    return jsonify(body)
