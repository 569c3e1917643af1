"""Malformed input table: every bad request gets a 4xx JSON error and no worker dies."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.support.gunicorn_server import GunicornServer
from tests.support.images import png_bytes
from tests.support.photos import encode, jpeg_bytes, textured


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming ``width``×``height`` pixels with a tiny body (a decompression bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A valid small JPEG whose SOF header is patched to claim other dimensions."""
    data = bytearray(jpeg_bytes(64, 64))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _flip_bytes(data: bytes, start: int, count: int = 64) -> bytes:
    out = bytearray(data)
    for i in range(start, min(start + count, len(out))):
        out[i] ^= 0xFF
    return bytes(out)


def _multipart(field: str, data: bytes) -> dict:
    return {"files": {field: ("photo.jpg", data, "image/jpeg")}}


def _raw(data: bytes, content_type: str = "image/jpeg") -> dict:
    return {"data": data, "headers": {"Content-Type": content_type}}


def _chunks(data: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    """A generator body: requests sends it with Transfer-Encoding: chunked (no length)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _chunked_multipart(data: bytes) -> dict:
    boundary = "breedrecboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    return {"data": _chunks(body), "headers": {"Content-Type": content_type}}


JPEG = jpeg_bytes(320, 240)
PNG = png_bytes(320, 240)
ELEVEN_MB = b"\xff\xd8\xff" + b"\x00" * (11 * 1024 * 1024)


@dataclass(frozen=True)
class Case:
    request: Callable[[], dict]
    status: int
    code: str
    method: str = "POST"
    path: str = "/predict"


CASES: dict[str, Case] = {
    "no_body": Case(lambda: {}, 400, "missing_image"),
    "raw_empty_body": Case(lambda: _raw(b""), 400, "missing_image"),
    "multipart_wrong_field": Case(lambda: _multipart("photo", JPEG), 400, "missing_image"),
    "multipart_text_field_only": Case(
        lambda: {"files": {"image": (None, "dog.jpg")}}, 400, "missing_image"
    ),
    "multipart_empty_file": Case(lambda: _multipart("image", b""), 400, "empty_image"),
    "json_body": Case(lambda: {"json": {"image": "aGVsbG8="}}, 415, "unsupported_media_type"),
    "text_body": Case(lambda: _raw(b"a dog", "text/plain"), 415, "unsupported_media_type"),
    "random_bytes": Case(lambda: _raw(bytes(range(256)) * 8), 422, "not_an_image"),
    "html_as_png": Case(lambda: _raw(b"<html>hi</html>" * 10, "image/png"), 422, "not_an_image"),
    "pdf": Case(
        lambda: _multipart("image", b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n" * 8), 422, "not_an_image"
    ),
    "svg": Case(
        lambda: _raw(
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "image/svg+xml"
        ),
        422,
        "not_an_image",
    ),
    "jpeg_magic_only": Case(lambda: _raw(b"\xff\xd8\xff\xe0" + b"\x00" * 40), 422, "not_an_image"),
    "jpeg_truncated_half": Case(lambda: _raw(JPEG[: len(JPEG) // 2]), 422, "corrupt_image"),
    "jpeg_header_only": Case(lambda: _raw(JPEG[:300]), 422, "corrupt_image"),
    "png_truncated": Case(lambda: _raw(PNG[: len(PNG) // 2], "image/png"), 422, "corrupt_image"),
    "png_corrupt_data": Case(
        lambda: _raw(_flip_bytes(PNG, 100), "image/png"), 422, "corrupt_image"
    ),
    "gif_truncated": Case(
        lambda: _raw(encode(textured().convert("P"), "GIF")[:900], "image/gif"),
        422,
        "corrupt_image",
    ),
    "webp_truncated": Case(
        lambda: _raw(encode(textured(), "WEBP")[:100], "image/webp"), 422, "corrupt_image"
    ),
    "png_1x1": Case(lambda: _raw(png_bytes(1, 1), "image/png"), 422, "image_too_small"),
    "png_4000x3_strip": Case(lambda: _raw(png_bytes(4000, 3), "image/png"), 422, "image_too_small"),
    "png_bomb_50k_square": Case(
        lambda: _raw(_png_header_only(50_000, 50_000), "image/png"), 413, "image_too_large"
    ),
    "jpeg_claims_65000_square": Case(
        lambda: _raw(_jpeg_claiming(65_000, 65_000)), 413, "image_too_large"
    ),
    "raw_over_upload_limit": Case(lambda: _raw(ELEVEN_MB), 413, "payload_too_large"),
    "raw_chunked_over_upload_limit": Case(
        lambda: _raw(_chunks(ELEVEN_MB)), 413, "payload_too_large"
    ),
    "multipart_chunked_over_upload_limit": Case(
        lambda: _chunked_multipart(ELEVEN_MB), 413, "payload_too_large"
    ),
    "multipart_over_upload_limit": Case(
        lambda: _multipart("image", ELEVEN_MB), 413, "payload_too_large"
    ),
    "top_k_not_a_number": Case(
        lambda: _multipart("image", JPEG), 400, "bad_top_k", path="/predict?top_k=abc"
    ),
    "top_k_zero": Case(
        lambda: _multipart("image", JPEG), 400, "bad_top_k", path="/predict?top_k=0"
    ),
    "top_k_too_big": Case(
        lambda: _multipart("image", JPEG), 400, "bad_top_k", path="/predict?top_k=11"
    ),
    "get_predict": Case(lambda: {}, 405, "method_not_allowed", method="GET"),
    "put_predict": Case(lambda: _raw(JPEG), 405, "method_not_allowed", method="PUT"),
    "unknown_route": Case(lambda: {}, 404, "not_found", method="GET", path="/predict/now"),
    "post_healthz": Case(lambda: {}, 405, "method_not_allowed", path="/healthz"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_gets_json_4xx(base_url: str, name: str) -> None:
    case = CASES[name]
    response = requests.request(case.method, f"{base_url}{case.path}", timeout=60, **case.request())
    assert response.status_code == case.status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == case.code
    assert isinstance(error["message"], str) and error["message"]


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 20


def test_workers_survive_bad_input(server: GunicornServer) -> None:
    """After the table (and anything else), the same workers still answer and none crashed."""
    for name in sorted(CASES):
        requests.request(
            CASES[name].method,
            f"{server.base_url}{CASES[name].path}",
            timeout=60,
            **CASES[name].request(),
        )
    ok = requests.post(f"{server.base_url}/predict", files={"image": ("a.jpg", JPEG)}, timeout=30)
    assert ok.status_code == 200
    logs = server.logs()
    assert server.process.poll() is None
    assert "Traceback" not in logs
    assert "exited with code" not in logs
    assert "WORKER TIMEOUT" not in logs
    assert '" 500 ' not in logs
