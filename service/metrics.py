"""Prometheus metrics for the whole service, across gunicorn workers.

Every part that answers (the API, the bot, feedback) counts here, so none imports another to
count. Each gunicorn worker is its own process, so the metrics use prometheus_client's
multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn.conf.py sets it before
the workers start and marks dead workers in ``child_exit``; prometheus_client reads it
itself); ``exposition`` then aggregates every worker. Without it (a single process, e.g. tests
calling the app directly) the default registry is used.
"""

from __future__ import annotations

import functools

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
CONTENT_TYPE = CONTENT_TYPE_LATEST  # what ``exposition`` returns

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
def _requests_child(route: str, method: str, status: int) -> Counter:
    """The labelled counter for one (route, method, status): looked up once, not per request."""
    return HTTP_REQUESTS.labels(route, method, str(status))


@functools.lru_cache(maxsize=64)
def _latency_child(route: str) -> Histogram:
    return HTTP_LATENCY.labels(route)


@functools.lru_cache(maxsize=64)
def _predictions_child(breed: str) -> Counter:
    return PREDICTIONS.labels(breed)


@functools.lru_cache(maxsize=8)
def _verdicts_child(verdict: str) -> Counter:
    return VERDICTS.labels(verdict)


def publish_model(predictor: Predictor) -> None:
    meta = predictor.metadata
    MODEL_INFO.labels(meta.name, meta.version, meta.architecture, predictor.backend.name).set(1)


def observe_request(route: str, method: str, status: int, seconds: float | None) -> None:
    """``route`` is a URL rule or "unmatched", never a raw path: bounded labels.
    ``seconds`` None: the request was not timed (counted only)."""
    _requests_child(route, method, status).inc()
    if seconds is not None:
        _latency_child(route).observe(seconds)


def observe_prediction(prediction: Prediction, seconds: float) -> None:
    INFERENCE_LATENCY.observe(seconds)
    _predictions_child(prediction.breed.wnid if prediction.breed else "unknown").inc()
    _verdicts_child(prediction.verdict).inc()


def observe_feedback(correct: bool, label: str) -> None:
    """``label`` is one of the breeds' wnids or "none" (checked before): bounded labels."""
    FEEDBACK.labels("right" if correct else "wrong", label).inc()


def exposition(multiprocess_mode: bool) -> bytes:
    """Every metric as Prometheus text (``CONTENT_TYPE``).

    ``multiprocess_mode``: the workers' metric files are summed (PROMETHEUS_MULTIPROC_DIR).
    """
    if multiprocess_mode:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry)
