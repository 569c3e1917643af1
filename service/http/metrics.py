"""Prometheus metrics for the whole service, across gunicorn workers.

Each gunicorn worker is its own process, so the metrics use prometheus_client's
multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn.conf.py sets it before
the workers start and marks dead workers in ``child_exit``; prometheus_client reads it
itself); /metrics then aggregates every worker. Without it (a single process, e.g. tests
calling the app directly) the default registry is used.
"""

from __future__ import annotations

import functools
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from model.predictor import Prediction, Predictor

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "breedrecognizer_http_requests",
    "HTTP requests by route, method and status code",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "breedrecognizer_http_request_duration_seconds",
    "Time to answer an HTTP request, by route",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_LATENCY = Histogram(
    "breedrecognizer_inference_duration_seconds",
    "Decode + preprocess + model run for one photo",
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "breedrecognizer_predictions",
    "Answers given, by predicted breed (wnid, or 'unknown' when not one of our breeds)",
    ["breed"],
)
VERDICTS = Counter(
    "breedrecognizer_verdicts",
    "Answers given, by verdict (sure, unsure, unknown)",
    ["verdict"],
)
FEEDBACK = Counter(
    "breedrecognizer_feedback",
    "Corrections stored, by outcome (right: the answer was confirmed, wrong: corrected) and "
    "by the label the user gave (wnid, or 'none')",
    ["outcome", "label"],
)
# Info-style gauge (always 1); "max" merges the identical series every worker writes.
MODEL_INFO = Gauge(
    "breedrecognizer_model_info",
    "The model being served",
    ["name", "version", "architecture", "backend"],
    multiprocess_mode="max",
)


@functools.lru_cache(maxsize=256)  # bounded: a client may send any method to an unknown path
def _requests_child(route: str, method: str, status: int):
    """The labelled counter for one (route, method, status): looked up once, not per request."""
    return HTTP_REQUESTS.labels(route, method, str(status))


@functools.lru_cache(maxsize=64)
def _latency_child(route: str):
    return HTTP_LATENCY.labels(route)


@functools.lru_cache(maxsize=64)
def _predictions_child(breed: str):
    return PREDICTIONS.labels(breed)


@functools.lru_cache(maxsize=8)
def _verdicts_child(verdict: str):
    return VERDICTS.labels(verdict)


def observe_prediction(prediction: Prediction, seconds: float) -> None:
    INFERENCE_LATENCY.observe(seconds)
    _predictions_child(prediction.breed.wnid if prediction.breed else "unknown").inc()
    _verdicts_child(prediction.verdict).inc()


def observe_feedback(correct: bool, label: str) -> None:
    """``label`` is one of the breeds' wnids or "none" (checked before): bounded labels."""
    FEEDBACK.labels("right" if correct else "wrong", label).inc()


def render(multiprocess_mode: bool) -> Response:
    if multiprocess_mode:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask, predictor: Predictor, multiprocess_mode: bool) -> None:
    """Count and time every request; publish the model info; serve GET /metrics.

    ``multiprocess_mode``: the workers' metric files are summed (PROMETHEUS_MULTIPROC_DIR).
    """
    meta = predictor.metadata
    MODEL_INFO.labels(meta.name, meta.version, meta.architecture, predictor.backend.name).set(1)

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        # The URL rule, not the raw path, keeps label cardinality bounded (404s are "unmatched").
        route = request.url_rule.rule if request.url_rule else "unmatched"
        _requests_child(route, request.method, response.status_code).inc()
        started = g.get("request_started")
        if started is not None:
            _latency_child(route).observe(time.perf_counter() - started)
        return response

    def metrics() -> Response:
        # A named function, not a partial: extensions (the client limits) read views' names.
        return render(multiprocess_mode)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
