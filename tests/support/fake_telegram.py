"""The bot tests' side of the fake Bot API (benchmarks/harness/fake_telegram.py): the webhook
secret the test servers run with, posting an update to one as Telegram does, and pressing the
buttons under a message the bot sent."""

from __future__ import annotations

from typing import Any

import requests

from benchmarks.harness.fake_telegram import Call, FakeTelegram
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


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """The inline keyboard under ``message``: button text -> callback data (empty: none)."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return {button["text"]: button["callback_data"] for row in rows for button in row}


def answer_to(fake: FakeTelegram, press: dict[str, Any], timeout: float = 30.0) -> Call:
    """The answerCallbackQuery that answered this callback-query update."""
    query_id = press["callback_query"]["id"]
    [call] = fake.wait_for(
        "answerCallbackQuery",
        1,
        timeout,
        where=lambda c: c.params.get("callback_query_id") == query_id and c.error is None,
    )
    return call
