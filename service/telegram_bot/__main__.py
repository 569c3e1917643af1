"""Connect the bot to the app: ``python -m service.telegram_bot set|delete|info``.

``set`` points Telegram at ``$APP_URL/telegram`` with ``$TELEGRAM_SECRET_TOKEN`` and the
update types the bot handles; ``delete`` disconnects it; ``info`` prints Telegram's view of
the webhook as JSON. Uses the same ``TELEGRAM_*`` variables as the app (including
``TELEGRAM_API_BASE_URL`` for a self-hosted Bot API). Exits non-zero with a one-line cause
on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from telegram import Bot
from telegram.error import InvalidToken, TelegramError

from service.settings import SettingsError, TelegramSettings, load_group
from service.telegram_bot.handlers import ALLOWED_UPDATES
from service.telegram_bot.webhook import WEBHOOK_PATH


class CliError(Exception):
    """A problem worth one line on stderr and exit status 1."""


def webhook_url(app_url: str) -> str:
    app_url = app_url.strip().rstrip("/")
    if not app_url.startswith("https://"):
        raise CliError(f"APP_URL must be an https:// URL (Telegram requires it), got {app_url!r}")
    return app_url + WEBHOOK_PATH


def _bot(config: TelegramSettings) -> Bot:
    if not config.token:
        raise CliError("TELEGRAM_TOKEN is not set")
    return Bot(config.token, base_url=config.api_base_url, base_file_url=config.file_base_url)


async def _run(command: str, args: argparse.Namespace, config: TelegramSettings) -> str:
    if command == "set":
        if not config.app_url:
            raise CliError("APP_URL is not set (the app's public https:// address)")
        url = webhook_url(config.app_url)
        if config.disabled_reason:  # the app would refuse updates: don't connect it
            raise CliError(config.disabled_reason)
    async with _bot(config) as bot:
        if command == "set":
            await bot.set_webhook(
                url,
                secret_token=config.secret_token,
                allowed_updates=list(ALLOWED_UPDATES),
                max_connections=args.max_connections,
                drop_pending_updates=args.drop_pending_updates,
            )
            return f"webhook set: {url} (updates: {', '.join(ALLOWED_UPDATES)})"
        if command == "delete":
            await bot.delete_webhook(drop_pending_updates=args.drop_pending_updates)
            return "webhook deleted"
        info = await bot.get_webhook_info()
        return json.dumps(info.to_dict(), indent=2, sort_keys=True, default=str)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.telegram_bot", description=__doc__)
    parser.add_argument("command", choices=["set", "delete", "info"])
    parser.add_argument(
        "--drop-pending-updates",
        action="store_true",
        help="set/delete: make Telegram forget updates that arrived while nothing answered",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=40,
        help="set: most simultaneous webhook calls Telegram makes (1-100, default 40)",
    )
    args = parser.parse_args(argv)
    try:
        config = load_group(TelegramSettings)
        print(asyncio.run(_run(args.command, args, config)))
    except (CliError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except InvalidToken:  # its message repeats the token, which must not end up in logs
        print("error: Telegram rejected TELEGRAM_TOKEN (check it with @BotFather)", file=sys.stderr)
        return 1
    except TelegramError as exc:
        print(f"error: Telegram Bot API: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
