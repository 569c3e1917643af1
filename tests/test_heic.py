"""HEIC/HEIF photos (the iPhone's default) read like JPEG and PNG: in the API, and in the bot's
image documents. The HEIC files are encoded here from PIL images with pillow-heif (tests only)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from PIL import Image

from tests.support.fake_telegram import FakeTelegram, Updates, post_update
from tests.support.gunicorn_server import GunicornServer
from tests.support.images import heic_bytes
from tests.support.photos import encode, load_val_photos, textured
from tests.support.settings import settings_from

# Lossless HEIC: full chroma and the identity matrix keep every RGB value as it was.
LOSSLESS = {"quality": -1, "chroma": 444, "matrix_coefficients": 0}


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """A real dog photo when the Imagewoof data is here, else a generated one."""
    photos = load_val_photos(1, seed=4)
    if photos:
        return Image.open(io.BytesIO(photos[0])).convert("RGB")
    return textured(400, 300, seed=4)


@pytest.fixture(scope="module")
def client() -> Iterator[FlaskClient]:
    """The app on the shipped model, as served, through Flask's test client."""
    from service.factory import create_app

    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = settings_from(monkeypatch, {"MODEL_THREADS": "1"})
        yield create_app(settings=settings).test_client()


def _answer(client: FlaskClient, data: bytes, name: str) -> dict[str, Any]:
    response = client.post("/predict", data={"image": (io.BytesIO(data), name)})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _same_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """What must not change with the file format (the id is new with every answer)."""
    return {key: value for key, value in answer.items() if key != "id"}


def test_lossless_heic_gets_the_png_answer(client: FlaskClient, picture: Image.Image) -> None:
    png = _answer(client, encode(picture, "PNG"), "dog.png")
    heic = _answer(client, heic_bytes(picture, **LOSSLESS), "IMG_0001.HEIC")
    assert _same_answer(heic) == _same_answer(png)


def test_lossy_heic_gets_the_jpeg_answer(client: FlaskClient, picture: Image.Image) -> None:
    """As an iPhone saves it (lossy, 4:2:0) against a high-quality JPEG of the same picture."""
    jpeg = _answer(client, encode(picture, "JPEG", quality=95), "dog.jpg")
    heic = _answer(client, heic_bytes(picture, quality=90), "IMG_0002.HEIC")
    assert heic["verdict"] == jpeg["verdict"]
    assert (heic["breed"] or {}).get("wnid") == (jpeg["breed"] or {}).get("wnid")
    assert heic["top_k"][0]["wnid"] == jpeg["top_k"][0]["wnid"]


def test_raw_heic_body_is_read(client: FlaskClient, picture: Image.Image) -> None:
    data = heic_bytes(picture, quality=90)
    response = client.post("/predict", data=data, content_type="image/heic")
    assert response.status_code == 200
    assert response.get_json()["verdict"] in ("sure", "unsure", "unknown")


@pytest.mark.parametrize("keep", [0.5, 0.9], ids=["half", "most"])
def test_truncated_heic_is_a_422_json_error(
    client: FlaskClient, picture: Image.Image, keep: float
) -> None:
    data = heic_bytes(picture, quality=90)
    response = client.post(
        "/predict", data={"image": (io.BytesIO(data[: int(len(data) * keep)]), "cut.heic")}
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "corrupt_image"


def test_heic_header_only_is_not_an_image(client: FlaskClient, picture: Image.Image) -> None:
    data = heic_bytes(picture, quality=90)[:64]  # the ftyp box and no more
    response = client.post("/predict", data=data, content_type="image/heic")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "not_an_image"


def test_pixel_limit_applies_to_heic(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.factory import create_app

    settings = settings_from(monkeypatch, {"MAX_IMAGE_PIXELS": "100000", "MODEL_THREADS": "1"})
    small_client = create_app(settings=settings).test_client()
    data = heic_bytes(textured(400, 300), quality=80)
    response = small_client.post("/predict", data=data, content_type="image/heic")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "image_too_large"


def test_bot_reads_a_heic_document(bot_server: GunicornServer, fake: FakeTelegram) -> None:
    """An iPhone photo sent "as a file" arrives as an image/heic document."""
    picture = textured(400, 300, seed=2)
    replies = []
    for chat_id, data, mime in (
        (1101, encode(picture, "PNG"), "image/png"),
        (1102, heic_bytes(picture, **LOSSLESS), "image/heic"),
    ):
        file_id = fake.add_file(data, suffix=mime.removeprefix("image/"))
        update = Updates(chat_id=chat_id).document(file_id, mime, size=len(data))
        assert post_update(bot_server, update).status_code == 200
        [reply] = fake.wait_for(
            "sendMessage", 1, 30.0, where=lambda call, c=chat_id: call.params["chat_id"] == c
        )
        replies.append(reply.params["text"])
    assert replies[0].startswith("My best guess: ")
    assert replies[1] == replies[0]
