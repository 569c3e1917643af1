"""Every error leaves the service as JSON ``{"error": {"code", "message"}}``, never as HTML.

User mistakes are 4xx; anything unexpected is logged with its traceback and answered with a
500 JSON body, so a bad request can never crash the worker or leak a Flask error page. The
front (service/front/) answers what it refuses itself with the same ``error_payload``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


class ApiError(Exception):
    """A user-facing error with an HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_payload(code: str, message: str) -> dict[str, Any]:
    """The one error shape of the whole service."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error_payload(code, message)), status


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        log.info("%s %s -> %d %s: %s", request.method, request.path, exc.status, exc.code, exc)
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status) or _snake(exc.name or "http_error")
        response, status = error_response(status, code, exc.description or exc.name)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed to handle this request")
