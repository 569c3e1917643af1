"""The app thread's lane: a request goes over as a PEP 3333 environ, the answer comes back whole."""

from __future__ import annotations

import asyncio
import io
import threading
from typing import Any

from service.front.lane import Lane, wsgi_environ

SCOPE = {
    "type": "http",
    "http_version": "1.1",
    "method": "POST",
    "scheme": "https",
    "root_path": "/api",
    "path": "/api/predict/chien",
    "query_string": b"top_k=2",
    "headers": [
        (b"content-type", b"multipart/form-data; boundary=x"),
        (b"content-length", b"5"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"x-forwarded-for", b"5.6.7.8"),
        (b"accept", b"application/json"),
    ],
    "client": ("10.0.0.9", 51000),
    "server": ("10.0.0.1", 8000),
}


def test_the_environ_is_what_a_wsgi_server_would_build() -> None:
    body = io.BytesIO(b"hello")
    environ = wsgi_environ(SCOPE, body)
    assert environ["REQUEST_METHOD"] == "POST"
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/api", "/predict/chien")
    assert environ["QUERY_STRING"] == "top_k=2"
    assert environ["CONTENT_TYPE"] == "multipart/form-data; boundary=x"
    assert environ["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert environ["HTTP_X_FORWARDED_FOR"] == "1.2.3.4,5.6.7.8"  # repeated headers joined
    assert environ["HTTP_ACCEPT"] == "application/json"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("10.0.0.9", "51000")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("10.0.0.1", "8000")
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1" and environ["wsgi.url_scheme"] == "https"
    assert environ["wsgi.input"].read() == b"hello"


def test_a_non_ascii_path_reaches_the_app_as_wsgi_wants_it() -> None:
    environ = wsgi_environ({**SCOPE, "root_path": "", "path": "/chien/é"}, io.BytesIO())
    assert environ["PATH_INFO"].encode("latin-1").decode("utf-8") == "/chien/é"


def test_the_answer_comes_back_whole_from_the_lanes_own_thread() -> None:
    seen: dict[str, Any] = {}
    lane: Lane

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["thread"] = threading.current_thread().name
        seen["busy_s"] = lane.busy_s()
        seen["body"] = environ["wsgi.input"].read()
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Answer", "yes")])
        return [b"one ", b"two"]

    lane = Lane(app, "testlane")
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(lane(SCOPE, io.BytesIO(b"photo"), send))
    assert seen["thread"].startswith("testlane") and seen["body"] == b"photo"
    assert seen["busy_s"] > 0 and lane.busy_s() == 0.0
    assert sent == [
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"text/plain"), (b"x-answer", b"yes")],
        },
        {"type": "http.response.body", "body": b"one two"},
    ]


def test_the_apps_iterable_is_closed_after_it_was_read() -> None:
    closed = threading.Event()

    class Answer(list):
        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Answer:
        start_response("200 OK", [])
        return Answer([b"ok"])

    async def send(message: dict[str, Any]) -> None:
        pass

    asyncio.run(Lane(app, "closing")(SCOPE, io.BytesIO(), send))
    assert closed.is_set()
