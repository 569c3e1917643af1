"""The one way the service connects to Redis (``REDIS_URL``), for every part that shares state."""

from __future__ import annotations

from typing import Any


def redis_client(url: str) -> tuple[Any, type[Exception]]:
    """A client with bounded timeouts, and the error class its calls raise.

    redis is imported only where ``REDIS_URL`` is set: it is a quarter of a worker's start-up
    imports.
    """
    import redis

    options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}
    if url.startswith("rediss://"):
        # Heroku Redis presents a self-signed certificate: encrypt, do not verify.
        options["ssl_cert_reqs"] = "none"
    return redis.Redis.from_url(url, **options), redis.RedisError
