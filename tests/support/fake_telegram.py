"""The bot tests' side of the fake Bot API (benchmarks/harness/fake_telegram.py): the webhook
secret the test servers run with, and posting an update to one as Telegram does."""

from __future__ import annotations

from typing import Any

import requests

from benchmarks.harness.server import GunicornServer

SECRET = "test-secret_0123456789"
HEADER = "X-Telegram-Bot-Api-Secret-Token"


def post_update(
    server: GunicornServer, update: Any, secret: str | None = SECRET, **kw: Any
) -> requests.Response:
    """POST ``update`` (JSON, or raw ``bytes``) to ``/telegram`` with the ``secret`` header."""
    headers = {HEADER: secret} if secret is not None else {}
    if isinstance(update, bytes):
        kw["data"] = update
        headers["Content-Type"] = "application/json"
    else:
        kw["json"] = update
    return requests.post(f"{server.base_url}/telegram", headers=headers, timeout=60, **kw)
