"""The Telegram bot: python-telegram-bot v22 handlers served from the Flask app's webhook.

``create_app()`` calls ``init_telegram(app, predictor, settings)`` and registers the
``telegram`` blueprint (``POST /telegram``).
"""

from service.telegram_bot.webhook import init_telegram, telegram

__all__ = ["init_telegram", "telegram"]
