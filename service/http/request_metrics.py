"""Count and time every HTTP request, and serve GET /metrics (service/metrics.py holds the
metrics themselves, shared with the bot and feedback)."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from model.predictor import Predictor
from service.metrics import CONTENT_TYPE, exposition, observe_request, publish_model


def init_app(app: Flask, predictor: Predictor, multiprocess_mode: bool) -> None:
    """Count and time every request; publish the model info; serve GET /metrics.

    ``multiprocess_mode``: the workers' metric files are summed (PROMETHEUS_MULTIPROC_DIR).
    """
    publish_model(predictor)

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        # The URL rule, not the raw path, keeps label cardinality bounded (404s are "unmatched").
        route = request.url_rule.rule if request.url_rule else "unmatched"
        started = g.get("request_started")
        seconds = None if started is None else time.perf_counter() - started
        observe_request(route, request.method, response.status_code, seconds)
        return response

    def metrics() -> Response:
        # A named function, not a partial: extensions (the client limits) read views' names.
        return Response(exposition(multiprocess_mode), mimetype=CONTENT_TYPE)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
