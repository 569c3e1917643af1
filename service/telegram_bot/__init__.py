"""The Telegram bot: python-telegram-bot v22 handlers on the web server's event loop.

The front routes ``POST /telegram`` (``WEBHOOK_PATH``) to ``handle_update``; ``build_bot``
makes each worker's bot when it is on.
"""

from service.telegram_bot.webhook import WEBHOOK_PATH, build_bot, handle_update

__all__ = ["WEBHOOK_PATH", "build_bot", "handle_update"]
