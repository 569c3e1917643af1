"""Multipart uploads: the photo part is found, whole, and a broken form is a clear 400."""

from __future__ import annotations

import io

import pytest
from flask import Request
from werkzeug.test import EnvironBuilder

from service.http.errors import ApiError
from service.http.uploads import extract_image
from tests.support.photos import encode, textured

BOUNDARY = "b0und4ry"


def _request(body: bytes, boundary: str | None = BOUNDARY) -> Request:
    content_type = "multipart/form-data" + (f"; boundary={boundary}" if boundary else "")
    return Request(
        EnvironBuilder(method="POST", data=body, content_type=content_type).get_environ()
    )


def _part(name: str, data: bytes, filename: str | None = "dog.jpg") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def _error(request: Request) -> ApiError:
    with pytest.raises(ApiError) as raised:
        extract_image(request)
    return raised.value


def test_a_phone_size_photo_among_other_fields_comes_out_intact() -> None:
    photo = encode(textured(2000, 1500, seed=4), "PNG")  # a few MB, over several reads
    assert len(photo) > 1024 * 1024
    environ = EnvironBuilder(
        method="POST",
        data={"note": "my dog", "image": (io.BytesIO(photo), "phone.png", "image/png")},
    ).get_environ()
    assert extract_image(Request(environ)) == photo


def test_the_file_field_is_accepted_and_image_wins_over_it() -> None:
    body = _part("file", b"second") + _part("image", b"first") + f"--{BOUNDARY}--\r\n".encode()
    assert extract_image(_request(body)) == b"first"
    only_file = _part("file", b"photo") + f"--{BOUNDARY}--\r\n".encode()
    assert extract_image(_request(only_file)) == b"photo"


def test_a_text_field_named_image_is_not_a_photo() -> None:
    body = _part("image", b"dog.jpg", filename=None) + f"--{BOUNDARY}--\r\n".encode()
    error = _error(_request(body))
    assert (error.status, error.code) == (400, "missing_image")
    assert "image" in error.message


@pytest.mark.parametrize(
    ("body", "boundary"),
    [
        (_part("image", b"half a photo"), BOUNDARY),  # no closing boundary
        (b"not a multipart body at all", BOUNDARY),
        (_part("image", b"photo") + f"--{BOUNDARY}--\r\n".encode(), None),
    ],
    ids=["truncated", "garbage", "no_boundary"],
)
def test_a_broken_form_is_a_400_that_says_so(body: bytes, boundary: str | None) -> None:
    error = _error(_request(body, boundary))
    assert (error.status, error.code) == (400, "bad_multipart")
