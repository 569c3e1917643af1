"""HTTP routes: POST /predict, GET /healthz, GET /readyz and the upload page at GET /."""

from __future__ import annotations

import logging
import time

from flask import Flask, jsonify, render_template, request

from model.predictor import Predictor
from model.preprocessing import ImageDecodeError
from service import metrics
from service.config import Settings
from service.errors import ApiError
from service.uploads import extract_image, parse_top_k

log = logging.getLogger(__name__)

# Decoder verdicts → HTTP status. Pixel-count limits (bombs, absurd sizes) are "too large".
DECODE_STATUS = {
    "empty_image": 400,
    "image_too_large": 413,
    "image_too_small": 422,
    "not_an_image": 422,
    "corrupt_image": 422,
}


def model_summary(predictor: Predictor) -> dict[str, str]:
    meta = predictor.metadata
    return {
        "name": meta.name,
        "version": meta.version,
        "architecture": meta.architecture,
        "backend": predictor.backend.name,
    }


def register_api(app: Flask, predictor: Predictor, settings: Settings) -> None:
    model_info = model_summary(predictor)

    @app.get("/")
    def index():
        return render_template(
            "index.html",
            model=model_info,
            classes=predictor.metadata.classes,
            max_upload_mb=settings.max_upload_mb,
        )

    @app.get("/healthz")
    def healthz():
        """Liveness: the process answers. It does not touch the model."""
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        """Readiness: routes exist only once the model is loaded and warmed up (create_app)."""
        return jsonify({"status": "ready", "model": model_info})

    @app.post("/predict")
    def predict():
        top_k = parse_top_k(request.args.get("top_k"), predictor.top_k)
        data = extract_image(request)
        started = time.perf_counter()
        try:
            prediction = predictor.predict_bytes(data, top_k)
        except ImageDecodeError as exc:
            raise ApiError(DECODE_STATUS.get(exc.code, 422), exc.code, exc.message) from None
        seconds = time.perf_counter() - started
        metrics.observe_prediction(prediction, seconds)
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
        body = prediction.to_dict()
        body["model"] = model_info
        return jsonify(body)
