"""Getting the photo (and options) out of a request, whatever way the client sent it.

Accepted: multipart field ``image`` (or ``file``), or a raw body (``curl --data-binary``) with
an image or octet-stream content type. Whether the bytes really are an image is decided by
the decoder in ``model.preprocessing``, not by the declared content type.
"""

from __future__ import annotations

import io
from typing import IO

from flask import Request

from service.http.errors import ApiError
from service.settings import MAX_TOP_K

FIELDS = ("image", "file")
# Bodies that are certainly not a photo. (curl --data-binary sends form-urlencoded by
# default, so that one is passed on to the decoder rather than refused.)
_NOT_IMAGE_TYPES = ("application/json", "application/xml")


class UploadRequest(Request):
    """Flask's request, with multipart file parts parsed into memory.

    The front (service/front/) has already read the whole body, within its memory budget,
    before the app runs, and the app thread takes one request at a time; Werkzeug's default
    of copying parts over 500 KB into a temporary file would only add a disk write and read
    per phone photo.
    """

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


def extract_image(request: Request) -> bytes:
    """Return the uploaded photo's bytes, or raise ApiError (400 missing / 415 wrong type)."""
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        for name in FIELDS:
            upload = request.files.get(name)
            if upload is not None:
                data = upload.read()
                if not data:
                    raise ApiError(400, "empty_image", f"the uploaded file {name!r} is empty")
                return data
        sent = sorted(set(request.files) | set(request.form))
        raise ApiError(
            400,
            "missing_image",
            f"no photo in the form: send it in the field 'image' (got fields: {sent or 'none'})",
        )
    if mimetype in _NOT_IMAGE_TYPES or mimetype.startswith("text/"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"cannot read a photo from a {mimetype} body; send multipart field 'image' "
            "or the raw image bytes with an image/* content type",
        )
    data = request.get_data(cache=False)
    if not data:
        raise ApiError(
            400,
            "missing_image",
            "no photo received: send multipart field 'image' or the raw image bytes",
        )
    return data


def parse_top_k(raw: str | None, default: int) -> int:
    """``?top_k=`` as an integer in 1..10; anything else is a 400, not a silent default."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_top_k", f"top_k must be an integer, got {raw!r}") from None
    if not 1 <= value <= MAX_TOP_K:
        raise ApiError(400, "bad_top_k", f"top_k must be between 1 and {MAX_TOP_K}, got {value}")
    return value
