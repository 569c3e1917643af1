"""The ``telegram`` blueprint: ``POST /telegram`` authenticates Telegram's call, has the bot
answer the update, and only then answers 200.

Telegram delivers an update again until a webhook call gets a 2xx, so the 200 comes after the
reply to the user: a replica killed at any moment never leaves an acknowledged update
unanswered. When no answer can be promised (Bot API or shared store unreachable, the update
being answered by another replica, flood control longer than the call can wait) the route
answers 503 (``Retry-After``: the Bot API's ``retry_after`` when it gave one) and Telegram
tries again later. The front runs these calls in threads of their own, beside the model's app
thread (service/front/wsgi.py).
"""

from __future__ import annotations

import hmac
import logging
import math
from functools import partial
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, current_app, jsonify, request

from model.predictor import Predictor
from service.http.context import service_context
from service.http.errors import error_response
from service.settings import Settings
from service.telegram_bot.ledger import Ledger, LedgerUnavailableError, open_ledger

if TYPE_CHECKING:  # python-telegram-bot is imported only where the bot is on
    from service.telegram_bot.runtime import BotRuntime

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
RETRY_AFTER_S = 30
EXTENSION_KEY = "telegram_bot"

telegram = Blueprint("telegram", __name__)


def init_telegram(app: Flask, predictor: Predictor, settings: Settings) -> BotRuntime | None:
    """Build this worker's bot runtime and keep it on the app; None (route answers 404) if off."""
    config = settings.telegram
    # A bad bot setting keeps the bot off; it must not take /predict down.
    problem = settings.telegram_error
    reason = f"bad configuration: {problem}" if problem else config.disabled_reason
    if reason is None:
        # Here, not at the top: a worker without the bot never loads python-telegram-bot
        # (a large share of its memory).
        from service.telegram_bot.limits import open_slots
        from service.telegram_bot.runtime import BotRuntime

        redis_url = settings.state.redis_url
        seen_db = str(config.seen_db) if config.seen_db else None
        ledger, slots = open_ledger(redis_url, seen_db), open_slots(redis_url, seen_db)
        context = service_context(app)  # built before the bot: its feedback and model card
        runtime = BotRuntime(config, predictor, ledger, slots, context.feedback, context.model)
        app.extensions[EXTENSION_KEY] = runtime
        store = "redis" if redis_url else "sqlite"
        service_context(app).readiness["telegram"] = partial(_readiness, ledger, store)
        log.info(
            "telegram bot enabled on POST /telegram (Bot API %s, answers recorded in %s)",
            config.api_base_url,
            store,
        )
        return runtime
    level = logging.ERROR if problem or config.token else logging.INFO
    log.log(level, "telegram bot disabled: %s; POST /telegram answers 404", reason)
    return None


def _readiness(ledger: Ledger, store: str) -> dict[str, object]:
    """Whether the bot can promise answers: its store of answered updates is reachable.

    Only what is down is said; the store's own error (addresses, versions) goes to the log.
    """
    try:
        ledger.check()
    except LedgerUnavailableError as exc:
        log.warning("readiness: the bot's %s store is unreachable: %s", store, exc)
        return {"store": store, "reachable": False}
    return {"store": store, "reachable": True}


@telegram.post("/telegram")
def telegram_webhook():
    runtime: BotRuntime | None = current_app.extensions.get(EXTENSION_KEY)
    given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
    if not given:  # unauthenticated whether or not the bot is on
        return error_response(403, "forbidden", f"missing {SECRET_HEADER} header")
    if runtime is None:
        return error_response(404, "telegram_disabled", "the Telegram bot is not enabled here")
    secret = runtime.config.secret_token.encode()
    if not hmac.compare_digest(given, secret):
        log.warning("telegram webhook call with a missing or wrong secret token refused")
        return error_response(403, "forbidden", f"missing or wrong {SECRET_HEADER} header")
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        log.debug("telegram webhook body is not a JSON object; ignored")
        return jsonify(ok=True)
    from service.telegram_bot.runtime import BotUnavailableError  # loaded with the runtime

    try:
        runtime.answer(data)
    except BotUnavailableError as exc:
        log.warning("telegram update not answered now (503, Telegram retries): %s", exc)
        response, status = error_response(
            503, "telegram_unavailable", f"the bot cannot answer this update now: {exc}"
        )
        wait_s = exc.retry_after_s if exc.retry_after_s is not None else RETRY_AFTER_S
        response.headers["Retry-After"] = str(math.ceil(wait_s))
        return response, status
    return jsonify(ok=True)
