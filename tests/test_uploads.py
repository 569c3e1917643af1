"""Multipart uploads are parsed into memory: the front already holds the whole body."""

from __future__ import annotations

import io

from werkzeug.test import EnvironBuilder

from service.http.uploads import UploadRequest, extract_image
from tests.support.photos import encode, textured


def test_a_phone_size_part_stays_in_memory_and_intact() -> None:
    photo = encode(textured(2000, 1500, seed=4), "PNG")  # a few MB: Werkzeug would spool it
    assert len(photo) > 1024 * 1024
    environ = EnvironBuilder(
        method="POST", data={"image": (io.BytesIO(photo), "phone.png", "image/png")}
    ).get_environ()
    request = UploadRequest(environ)
    assert isinstance(request.files["image"].stream, io.BytesIO)
    assert extract_image(request) == photo
