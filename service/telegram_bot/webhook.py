"""``POST /telegram``: authenticate Telegram's call, hand the update to the bot, answer 200.

The route never waits for the answer to the user: Telegram redelivers updates that get a
non-2xx reply, so handling happens on the bot's own loop and failures end in an apology
message, not in an HTTP error.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request

from model.predictor import Predictor
from model.preprocessing import DEFAULT_MAX_PIXELS
from service.errors import error_response
from service.telegram_bot.config import TelegramConfig, TelegramConfigError
from service.telegram_bot.runtime import BotRuntime, BotUnavailableError

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
RETRY_AFTER_S = 30


def register_telegram(
    app: Flask,
    predictor: Predictor | Callable[[], Predictor],
    settings: Any = None,
) -> BotRuntime | None:
    """Add ``POST /telegram`` to ``app``; returns the bot runtime, or None when disabled.

    ``predictor`` may be a loaded Predictor or a zero-argument callable returning one (for
    apps that load the model lazily). ``settings`` (the web layer's Settings) supplies the
    environment mapping and the image pixel limit; without it ``os.environ`` is used.
    """
    env = getattr(settings, "environ", None) or os.environ
    try:
        config = TelegramConfig.from_env(env)
        reason = config.disabled_reason
    except TelegramConfigError as exc:  # a bad bot setting must not take /predict down
        config, reason = TelegramConfig(), f"bad configuration: {exc}"
    if reason is not None:
        level = logging.INFO if not env.get("TELEGRAM_TOKEN", "").strip() else logging.ERROR
        log.log(level, "telegram bot disabled: %s; POST /telegram answers 404", reason)

        @app.post("/telegram")
        def telegram_disabled():
            return error_response(404, "telegram_disabled", "the Telegram bot is not enabled here")

        return None

    provider = predictor if callable(predictor) else (lambda: predictor)
    max_pixels = getattr(settings, "max_image_pixels", DEFAULT_MAX_PIXELS)
    runtime = BotRuntime(config, provider, max_pixels)
    app.extensions["telegram_bot"] = runtime
    secret = config.secret_token.encode()
    log.info("telegram bot enabled on POST /telegram (Bot API %s)", config.api_base_url)

    @app.post("/telegram")
    def telegram_webhook():
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
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

    return runtime
