"""Getting the photo (and options) out of a request, whatever way the client sent it.

Accepted: multipart field ``image`` (or ``file``), or a raw body (``curl --data-binary``) with
an image or octet-stream content type. Whether the bytes really are an image is decided by
the decoder in ``model.preprocessing``, not by the declared content type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

from flask import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from service.http.errors import ApiError
from service.settings import MAX_TOP_K

FIELDS = ("image", "file")
# Bodies that are certainly not a photo. (curl --data-binary sends form-urlencoded by
# default, so that one is passed on to the decoder rather than refused.)
_NOT_IMAGE_TYPES = ("application/json", "application/xml")
READ_SIZE = 64 * 1024


def extract_image(request: Request) -> bytes:
    """Return the uploaded photo's bytes, or raise ApiError (400 missing / 415 wrong type)."""
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        return _photo_part(read_form(request.stream, request.mimetype_params.get("boundary")))
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


@dataclass
class FormPart:
    """One part of a multipart form; a file part is one whose header names a file."""

    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


def read_form(stream: IO[bytes], boundary: str | None) -> list[FormPart]:
    """The parts of a multipart body, in memory: the front already holds the whole body.

    python-multipart's streaming parser, not Werkzeug's form parser: Werkzeug compiles two
    regular expressions around each request's boundary, and every client sends a new one,
    so that alone cost more than the rest of the parsing.
    """
    if not boundary:
        raise ApiError(400, "bad_multipart", "the multipart body has no boundary parameter")
    form = _Form()
    parser = MultipartParser(boundary.encode("latin-1"), form.callbacks())
    try:
        while chunk := stream.read(READ_SIZE):
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, "bad_multipart", f"the multipart body is malformed: {exc}") from None
    if not form.complete:
        raise ApiError(400, "bad_multipart", "the multipart body ends before its last boundary")
    return form.parts


def _photo_part(parts: list[FormPart]) -> bytes:
    for name in FIELDS:
        upload = next((p for p in parts if p.name == name and p.filename is not None), None)
        if upload is not None:
            if not upload.data:
                raise ApiError(400, "empty_image", f"the uploaded file {name!r} is empty")
            return bytes(upload.data)
    sent = sorted({p.name for p in parts})
    raise ApiError(
        400,
        "missing_image",
        f"no photo in the form: send it in the field 'image' (got fields: {sent or 'none'})",
    )


class _Form:
    """The parser's callbacks: headers and data of each part as they stream past."""

    def __init__(self) -> None:
        self.parts: list[FormPart] = []
        self.complete = False
        self._header_name = bytearray()
        self._header_value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": lambda: self.parts.append(FormPart()),
            "on_part_data": lambda data, start, end: self.parts[-1].data.extend(data[start:end]),
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_end": self._end,
        }

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            _, params = parse_options_header(bytes(self._header_value))
            part = self.parts[-1]
            part.name = params.get(b"name", b"").decode("utf-8", "replace")
            filename = params.get(b"filename")
            part.filename = None if filename is None else filename.decode("utf-8", "replace")
        self._header_name.clear()
        self._header_value.clear()

    def _end(self) -> None:
        self.complete = True


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
