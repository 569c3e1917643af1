"""Per-client limits on the routes that cost a model run or a write: POST /predict, POST /feedback.

One instance is a few workers; a single script posting photos in a loop would otherwise take
them all from everyone else. flask-limiter counts each client's requests in Redis when
``REDIS_URL`` is set (one budget across replicas), else in each worker's memory (a client may
then get up to ``WEB_CONCURRENCY`` times its budget: a bound, not an exact count). Over budget:
``429 rate_limited`` in the API's error shape, with ``Retry-After``.

The client is the address the platform's router appended to ``X-Forwarded-For`` (werkzeug's
ProxyFix with ``PROXY_HOPS`` trusted hops, applied to the app, so ``request.remote_addr`` is
that address and entries a client writes itself are ignored). Loopback requests without
``X-Forwarded-For`` (health checks, ``make bench``, local tools) are never limited. If the
limits' Redis is unreachable, counting falls back to memory and no request fails for it.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time

from flask import Flask, current_app, request
from flask_limiter import Limit, Limiter, RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix

from service.http.errors import error_response
from service.redis_client import redis_client
from service.settings import ClientLimitsSettings

log = logging.getLogger(__name__)

EXTENSION_KEY = "breedrecognizer_limits"
KEY_PREFIX = "breedrecognizer:limits"
# The limited routes (endpoint names); everything else (/healthz, /readyz, /metrics, the page,
# /telegram, whose flood rules are Telegram's) is never counted.
PREDICT_ENDPOINT = "api.predict"
FEEDBACK_ENDPOINT = "feedback.submit_feedback"
# One home or phone network gets a whole IPv6 /64: its hosts may take any address in it.
IPV6_CLIENT_PREFIX = 64


def client_key() -> str:
    """The client's address (after ProxyFix); an IPv6 client counts as its /64."""
    address = request.remote_addr or ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(ip)


def is_local_tool() -> bool:
    """A request from this machine that no proxy forwarded: never limited."""
    if "X-Forwarded-For" in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _not_endpoint(endpoint: str) -> bool:
    return request.endpoint != endpoint


def _retry_after(exc: RateLimitExceeded) -> int:
    """Whole seconds until the breached window lets this client in again (at least 1)."""
    limiter: Limiter | None = current_app.extensions.get(EXTENSION_KEY)
    current = limiter.current_limit if limiter is not None else None
    try:
        reset_at = float(current.reset_at) if current is not None else math.nan
    except Exception:  # the storage went away since the check: the window's length will do
        reset_at = math.nan
    if math.isnan(reset_at):
        return max(1, int(exc.limit.limit.get_expiry()))
    return max(1, math.ceil(reset_at - time.time()))


def _too_many(exc: RateLimitExceeded):
    seconds = _retry_after(exc)
    response, status = error_response(
        429,
        "rate_limited",
        f"too many requests from this address (at most {exc.limit.limit}); "
        f"try again in {seconds} s",
    )
    response.headers["Retry-After"] = str(seconds)
    return response, status


def init_limits(app: Flask, settings: ClientLimitsSettings, redis_url: str | None) -> None:
    """Trust ``PROXY_HOPS`` proxies for the client's address and limit the costly routes."""
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops)  # type: ignore[method-assign]
    if not settings.enabled:
        return
    storage_uri, options = "memory://", {}
    if redis_url:
        # The service's one Redis policy (timeouts, Heroku's TLS) through its connection pool.
        client, _ = redis_client(redis_url)
        storage_uri, options = redis_url, {"connection_pool": client.connection_pool}
    per_route = {PREDICT_ENDPOINT: settings.predict, FEEDBACK_ENDPOINT: settings.feedback}
    limiter = Limiter(
        client_key,
        app=app,
        default_limits=[
            Limit(value, exempt_when=functools.partial(_not_endpoint, endpoint))
            for endpoint, value in per_route.items()
        ],
        storage_uri=storage_uri,
        storage_options=options,
        # One counter per client and window: the cheapest in Redis (one INCR per limit).
        strategy="fixed-window",
        key_prefix=KEY_PREFIX,
        headers_enabled=False,
        # Redis away: count in this worker's memory until it is back, and never fail a request
        # for the limits' sake.
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    limiter.request_filter(is_local_tool)
    app.extensions[EXTENSION_KEY] = limiter
    app.register_error_handler(RateLimitExceeded, _too_many)
    log.info(
        "client limits: /predict %s, /feedback %s, counted in %s, %d proxy hop(s) trusted",
        settings.predict,
        settings.feedback,
        "Redis" if redis_url else "each worker's memory",
        settings.proxy_hops,
    )
