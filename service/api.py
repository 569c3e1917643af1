"""HTTP routes: POST /predict, GET /healthz, GET /readyz and the upload page at GET /."""

from __future__ import annotations

import logging
import time
from typing import Any

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
        """Readiness: the model is loaded and has run its warm-up inferences."""
        if not app.extensions.get("breedrecognizer.ready"):
            return jsonify({"status": "loading", "model": model_info}), 503
        return jsonify({"status": "ready", "model": model_info})

    @app.post("/predict")
    def predict():
        top_k = parse_top_k(request.args.get("top_k"), settings.top_k)
        data = extract_image(request)
        started = time.perf_counter()
        try:
            prediction = predictor.predict_bytes(
                data, top_k=top_k, max_pixels=settings.max_image_pixels
            )
        except ImageDecodeError as exc:
            raise ApiError(DECODE_STATUS.get(exc.code, 422), exc.code, exc.message) from None
        seconds = time.perf_counter() - started
        metrics.observe_prediction(prediction, seconds)
        result = prediction.to_dict()
        body: dict[str, Any] = {
            "breed": result["breed"],
            "known": result["known"],
            "known_score": result["known_score"],
            "top_k": result["top_k"],
            "model": model_info,
        }
        log.info(
            "predicted %s (known=%s, %.3f) for %d bytes in %.1f ms",
            prediction.top_k[0].name,
            prediction.known,
            prediction.top_k[0].confidence,
            len(data),
            seconds * 1000,
        )
        return jsonify(body)
