"""Every error leaves the service as JSON ``{"error": {"code", "message"}}``, never as HTML.

User mistakes are 4xx; anything unexpected is logged with its traceback and answered with a
500 JSON body, so a bad request can never crash the worker or leak a Flask error page.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)

# Bytes of an oversized upload read (and dropped) before answering 413. Closing the socket
# with unread data makes the kernel send a reset, and clients then see "connection reset"
# instead of our JSON answer; past this bound we stop reading and accept that.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024

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


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _drain_request_body() -> None:
    """Read and drop what is left of the request body (bounded), so the 413 reaches the client."""
    stream = request.environ.get("wsgi.input")
    if stream is None:
        return
    remaining = DRAIN_LIMIT_BYTES
    try:
        while remaining > 0:
            chunk = stream.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)
    except (OSError, ValueError):  # client went away; nothing left to protect
        pass


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        log.info("%s %s -> %d %s: %s", request.method, request.path, exc.status, exc.code, exc)
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        _drain_request_body()
        limit = app.config.get("MAX_CONTENT_LENGTH")
        message = "the upload is too large"
        if limit:
            message += f"; the limit is {limit / (1024 * 1024):g} MB"
        return error_response(413, "payload_too_large", message)

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
