"""The Telegram bot: python-telegram-bot v22 handlers served from the Flask app's webhook.

``register_telegram(app, predictor, settings)`` is the one entry point the app calls.
"""

from service.telegram_bot.webhook import register_telegram

__all__ = ["register_telegram"]
