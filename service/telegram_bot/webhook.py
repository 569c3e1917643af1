"""``POST /telegram``: authenticate Telegram's call, have the bot answer the update, and only
then answer 200.

Telegram delivers an update again until a webhook call gets a 2xx, so the 200 comes after the
reply to the user: a replica killed at any moment never leaves an acknowledged update
unanswered. When no answer can be promised (Bot API or shared store unreachable, the update
being answered by another replica, flood control longer than the call can wait) the call gets
503 (``Retry-After``: the Bot API's ``retry_after`` when it gave one) and Telegram tries again
later. The handler runs on the event loop, beside the bot; the front routes the path here.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from model.predictor import Predictor
from service.feedback.service import Feedback
from service.settings import Settings
from service.telegram_bot.ledger import Ledger, LedgerUnavailableError, open_ledger

if TYPE_CHECKING:  # python-telegram-bot is imported only where the bot is on
    from service.telegram_bot.runtime import BotRuntime

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
RETRY_AFTER_S = 30


@dataclass(frozen=True)
class Reply:
    """The webhook call's answer: a status and a JSON body in the API's shape."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, code: str, message: str, **headers: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}}, headers)


OK = Reply(200, {"ok": True})


def build_bot(
    settings: Settings,
    predictor: Predictor,
    feedback: Feedback | None,
    model: dict[str, str],
) -> tuple[BotRuntime, Callable[[], dict[str, object]]] | None:
    """This worker's bot and its readiness check, or None (the route answers 404) when it
    is off."""
    config = settings.telegram
    # A bad bot setting keeps the bot off; it must not take /predict down.
    problem = settings.telegram_error
    reason = f"bad configuration: {problem}" if problem else config.disabled_reason
    if reason is not None:
        level = logging.ERROR if problem or config.token else logging.INFO
        log.log(level, "telegram bot disabled: %s; POST %s answers 404", reason, WEBHOOK_PATH)
        return None
    # Here, not at the top: a worker without the bot never loads python-telegram-bot
    # (a large share of its memory).
    from service.telegram_bot.limits import open_slots
    from service.telegram_bot.runtime import BotRuntime

    redis_url = settings.state.redis_url
    seen_db = str(config.seen_db) if config.seen_db else None
    ledger, slots = open_ledger(redis_url, seen_db), open_slots(redis_url, seen_db)
    store = "redis" if redis_url else "sqlite"
    log.info(
        "telegram bot enabled on POST %s (Bot API %s, answers recorded in %s)",
        WEBHOOK_PATH,
        config.api_base_url,
        store,
    )
    runtime = BotRuntime(config, predictor, ledger, slots, feedback, model)
    return runtime, partial(readiness, ledger, store)


def readiness(ledger: Ledger, store: str) -> dict[str, object]:
    """Whether the bot can promise answers: its store of answered updates is reachable.

    Only what is down is said; the store's own error (addresses, versions) goes to the log.
    """
    try:
        ledger.check()
    except LedgerUnavailableError as exc:
        log.warning("readiness: the bot's %s store is unreachable: %s", store, exc)
        return {"store": store, "reachable": False}
    return {"store": store, "reachable": True}


async def handle_update(runtime: BotRuntime | None, secret: str | None, body: bytes) -> Reply:
    """One webhook call: its secret header and its body."""
    if not secret:  # unauthenticated whether or not the bot is on
        return _error(403, "forbidden", f"missing {SECRET_HEADER} header")
    if runtime is None:
        return _error(404, "telegram_disabled", "the Telegram bot is not enabled here")
    given = secret.encode("utf-8", "replace")
    if not hmac.compare_digest(given, runtime.config.secret_token.encode()):
        log.warning("telegram webhook call with a missing or wrong secret token refused")
        return _error(403, "forbidden", f"missing or wrong {SECRET_HEADER} header")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        log.debug("telegram webhook body is not a JSON object; ignored")
        return OK
    from service.telegram_bot.runtime import BotUnavailableError  # loaded with the runtime

    try:
        await runtime.answer(data)
    except BotUnavailableError as exc:
        log.warning("telegram update not answered now (503, Telegram retries): %s", exc)
        wait_s = exc.retry_after_s if exc.retry_after_s is not None else RETRY_AFTER_S
        message = f"the bot cannot answer this update now: {exc}"
        return _error(
            503, "telegram_unavailable", message, **{"Retry-After": str(math.ceil(wait_s))}
        )
    return OK
