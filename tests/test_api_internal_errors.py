"""A failure inside the model is a logged 500 JSON answer, and the app keeps serving."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest

from model.backends import load_backend
from model.defaults import SHIPPED_MODEL
from model.predictor import Predictor
from service.factory import create_app
from tests.support.photos import jpeg_bytes
from tests.support.settings import settings_from


class FlakyBackend:
    """The real backend, except that it fails when told to (out of memory, a bad kernel...)."""

    def __init__(self) -> None:
        self.inner = load_backend(SHIPPED_MODEL)
        self.metadata = self.inner.metadata
        self.name = self.inner.name
        self.fail = False

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.fail:
            raise RuntimeError("simulated inference failure")
        return self.inner.run(batch)


def _upload() -> dict:
    return {"image": (io.BytesIO(jpeg_bytes()), "a.jpg")}


def test_internal_error_is_json_500_and_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FlakyBackend()
    client = create_app(Predictor(backend), settings_from(monkeypatch, {})).test_client()
    backend.fail = True
    with caplog.at_level(logging.ERROR):
        response = client.post("/predict", data=_upload())
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal_error", "message": "the server failed to handle this request"}
    }
    assert "simulated inference failure" in caplog.text  # the traceback is logged, not sent
    backend.fail = False
    assert client.post("/predict", data=_upload()).status_code == 200  # the app goes on
