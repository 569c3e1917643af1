"""Service settings, read once from environment variables with sane defaults.

Other modules (e.g. the Telegram bot) read their own ``TELEGRAM_*`` variables themselves;
``Settings.environ`` keeps the mapping the settings were built from so they can use the
same source in tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from model.preprocessing import DEFAULT_MAX_PIXELS
from model.source import SERVED_MODEL
from service.env import env_int, env_positive

MAX_TOP_K = 10


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    return env_int(env, name, default, minimum, error=SettingsError)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return env_positive(env, name, default, error=SettingsError)


@dataclass(frozen=True)
class Settings:
    """Everything the web layer is configured with (see the README's table)."""

    model_uri: str = str(SERVED_MODEL)
    model_sha256: str | None = None
    model_threads: int | None = None
    max_upload_mb: float = 10.0
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    top_k: int = 3
    log_level: str = "INFO"
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        top_k = _int(env, "TOP_K", 3)
        if top_k > MAX_TOP_K:
            raise SettingsError(f"TOP_K must be <= {MAX_TOP_K}, got {top_k}")
        threads = env.get("MODEL_THREADS", "").strip()
        return cls(
            model_uri=env.get("MODEL_URI", "").strip() or str(SERVED_MODEL),
            model_sha256=env.get("MODEL_SHA256", "").strip() or None,
            model_threads=_int(env, "MODEL_THREADS", 1) if threads else None,
            max_upload_mb=_float(env, "MAX_UPLOAD_MB", 10.0),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS),
            top_k=top_k,
            log_level=(env.get("LOG_LEVEL", "").strip() or "INFO").upper(),
            environ=env,
        )
