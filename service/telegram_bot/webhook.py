"""The ``telegram`` blueprint: ``POST /telegram`` authenticates Telegram's call, hands the
update to the bot and answers 200.

The route never waits for the answer to the user: Telegram redelivers updates that get a
non-2xx reply, so handling happens on the bot's own loop and failures end in an apology
message, not in an HTTP error.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Flask, current_app, jsonify, request

from model.predictor import Predictor
from service.http.errors import error_response
from service.settings import Settings
from service.telegram_bot.runtime import BotRuntime, BotUnavailableError

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
        runtime = BotRuntime(config, predictor)
        app.extensions[EXTENSION_KEY] = runtime
        log.info("telegram bot enabled on POST /telegram (Bot API %s)", config.api_base_url)
        return runtime
    level = logging.ERROR if problem or config.token else logging.INFO
    log.log(level, "telegram bot disabled: %s; POST /telegram answers 404", reason)
    return None


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
    try:
        runtime.submit(data)
    except BotUnavailableError as exc:
        response, status = error_response(
            503, "telegram_unavailable", f"the bot cannot take updates right now: {exc}"
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response, status
    return jsonify(ok=True)
