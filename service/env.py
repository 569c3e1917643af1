"""Numbers from environment variables: one parser, each caller raising its own error type.

Standard library only: gunicorn.conf.py reads the front's settings through it in the master.
"""

from __future__ import annotations

from collections.abc import Mapping


def env_int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 1, error: type = ValueError
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise error(f"{name} must be >= {minimum}, got {value}")
    return value


def env_positive(
    env: Mapping[str, str], name: str, default: float, error: type = ValueError
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise error(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise error(f"{name} must be > 0, got {value}")
    return value
