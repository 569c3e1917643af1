"""``GET /openapi.json``: the HTTP contract, kept in ``service/openapi.yaml`` and nowhere else."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from flask import Flask, jsonify

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.yaml"


@cache
def load_openapi() -> dict[str, Any]:
    """The document as a dict, parsed once per process."""
    with OPENAPI_PATH.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def register_openapi(app: Flask) -> None:
    """Serve the document; it is parsed at registration so a broken file stops the start."""
    document = load_openapi()

    @app.get("/openapi.json")
    def openapi_document():
        return jsonify(document)
