"""The bot's own settings, read from ``TELEGRAM_*`` environment variables.

Kept apart from the web layer's ``Settings`` so the bot can be reasoned about (and the
webhook CLI can run) without the model or Flask.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_API_BASE_URL = "https://api.telegram.org/bot"
DEFAULT_FILE_BASE_URL = "https://api.telegram.org/file/bot"
# The public Bot API refuses getFile for files above 20 MB; a self-hosted one allows more.
DEFAULT_MAX_FILE_MB = 20.0
# The update types the webhook asks Telegram for (the CLI sends this as allowed_updates).
ALLOWED_UPDATES = ("message",)
# Telegram's rule for X-Telegram-Bot-Api-Secret-Token: 1-256 characters A-Z a-z 0-9 _ -.
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramConfigError(ValueError):
    """A ``TELEGRAM_*`` variable holds a value the bot cannot use."""


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise TelegramConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if value <= 0:
        raise TelegramConfigError(f"{name} must be > 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class TelegramConfig:
    """What the bot needs; ``disabled_reason`` says why the webhook route is off (or None)."""

    token: str | None = None
    secret_token: str | None = None
    api_base_url: str = DEFAULT_API_BASE_URL
    file_base_url: str = DEFAULT_FILE_BASE_URL
    max_file_bytes: int = int(DEFAULT_MAX_FILE_MB * 1024 * 1024)
    concurrent_updates: int = 8
    model_workers: int = 1
    startup_timeout_s: float = 15.0
    top_k: int = 3
    # SQLite file of update ids already taken, shared by the workers (None: this process only).
    seen_db: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TelegramConfig:
        env = os.environ if env is None else env
        return cls(
            token=env.get("TELEGRAM_TOKEN", "").strip() or None,
            secret_token=env.get("TELEGRAM_SECRET_TOKEN", "").strip() or None,
            api_base_url=env.get("TELEGRAM_API_BASE_URL", "").strip() or DEFAULT_API_BASE_URL,
            file_base_url=env.get("TELEGRAM_FILE_BASE_URL", "").strip() or DEFAULT_FILE_BASE_URL,
            max_file_bytes=int(
                _number(env, "TELEGRAM_MAX_FILE_MB", DEFAULT_MAX_FILE_MB) * 1024 * 1024
            ),
            concurrent_updates=int(_number(env, "TELEGRAM_CONCURRENT_UPDATES", 8, int)),
            model_workers=int(_number(env, "TELEGRAM_MODEL_WORKERS", 1, int)),
            startup_timeout_s=_number(env, "TELEGRAM_STARTUP_TIMEOUT_S", 15.0),
            seen_db=env.get("TELEGRAM_SEEN_DB", "").strip() or None,
        )

    @property
    def disabled_reason(self) -> str | None:
        if not self.token:
            return "TELEGRAM_TOKEN is not set"
        if not self.secret_token:
            # Without a secret anyone who finds the URL could make the bot message any chat.
            return "TELEGRAM_SECRET_TOKEN is not set (refusing to accept unauthenticated updates)"
        if not _SECRET_RE.match(self.secret_token):
            return "TELEGRAM_SECRET_TOKEN must be 1-256 characters of A-Z a-z 0-9 _ -"
        return None
