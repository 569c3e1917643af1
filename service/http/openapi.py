"""The HTTP contract, kept in ``service/http/openapi.yaml`` and nowhere else (served by the api)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.yaml"


@cache
def load_openapi() -> dict[str, Any]:
    """The document as a dict, parsed once per process."""
    with OPENAPI_PATH.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)
