"""Every setting of the service, read from the environment in this module and nowhere else.

One tree of pydantic-settings groups (model, API, front, server, state, client limits,
feedback, Telegram bot); each field is one environment variable, named by the group's prefix
and the field (``MODEL_`` + ``uri`` = ``MODEL_URI``) and documented by its description.
``load_settings()`` reads them once; gunicorn.conf.py (in the master), the app factory and the
worker class (after the fork) all call it. ``python -m service.settings`` writes the
generated reference, docs/settings.md.

Standard library and pydantic only (``model.defaults`` is too): gunicorn.conf.py imports
this in the master, before any worker (or numpy, or a model runtime) exists.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.defaults import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DECODE_BUDGET_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_TOP_K,
)

MAX_TOP_K = 10
# gunicorn's "worker failed to boot" exit code: the master stops instead of respawning the
# worker forever, so a bad setting or MODEL_URI/MODEL_SHA256 means the service refuses to start.
BOOT_FAILURE_EXIT = 3
REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_PATH = REPO_ROOT / "docs" / "settings.md"
# Telegram's rule for X-Telegram-Bot-Api-Secret-Token: 1-256 characters A-Z a-z 0-9 _ -.
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# A rate limit as the ``limits`` library reads it: "30/minute", "300 per hour", several joined
# by ";" or ",". Checked here so that a typo stops the start with the variable's name.
_ONE_LIMIT = r"\s*\d+\s*(?:/|\s+per\s+)\s*(?:\d+\s*)?(?:second|minute|hour|day|month|year)s?\s*"
_LIMITS_RE = re.compile(rf"^{_ONE_LIMIT}(?:[;,]{_ONE_LIMIT})*$", re.IGNORECASE)

PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use (one line: which, why)."""


def _config(prefix: str = "", ignore_empty: bool = True) -> SettingsConfigDict:
    # Empty variables count as unset, except where empty means something (ACCESS_LOG).
    return SettingsConfigDict(env_prefix=prefix, env_ignore_empty=ignore_empty, frozen=True)


class ModelSettings(BaseSettings):
    """Which artifact to serve and how to run it."""

    model_config = _config("MODEL_")

    uri: str | None = Field(
        None,
        description="Model artifact: a local path, `file://…` or `s3://bucket/key`; "
        "`.onnx` runs on ONNX Runtime, `.pt` on TorchScript (needs "
        "requirements-torchscript.txt). Unset: the shipped ONNX copy of `MODEL_PRECISION`.",
    )
    precision: Literal["auto", "int8", "fp32"] = Field(
        "auto",
        description="Which shipped ONNX copy to serve when `MODEL_URI` is unset: `auto` takes "
        "static int8 where the CPU has int8 dot-product instructions (VNNI, AMX, ARM dotprod) "
        "and the int8 copy passed the lab's acceptance on the served answers, else fp32. The "
        "choice and its reason are logged and shown in every answer's `model`.",
    )
    sha256: str | None = Field(
        None,
        description="If set, the artifact's SHA-256 must match or the service refuses to start.",
    )
    threads: PositiveInt | None = Field(
        None,
        description="Threads of the model's runtime per worker. Unset: gunicorn.conf.py sets "
        "CPU cores ÷ workers (at least 1); outside gunicorn, all cores.",
    )
    cache_dir: Path = Field(
        DEFAULT_CACHE_DIR,
        description="Where artifacts downloaded from S3 are cached (keyed by bucket, key and "
        "ETag).",
    )


class ApiSettings(BaseSettings):
    """What one answer of the HTTP API (and of the bot) may take and gives."""

    model_config = _config()

    max_upload_mb: PositiveFloat = Field(
        10.0,
        description="Largest request body, enforced while it is read → else `413 "
        "payload_too_large`.",
    )
    max_image_pixels: PositiveInt = Field(
        DEFAULT_MAX_PIXELS,
        description="Largest image (width × height), checked before decoding → else `413 "
        "image_too_large`.",
    )
    decode_budget_mb: PositiveFloat = Field(
        DEFAULT_DECODE_BUDGET_BYTES / 2**20,
        description="Memory one photo's decoding may take, estimated from its header before "
        "decoding (format, size, mode; docs/api.md#photos-and-memory) → else `422 "
        "too_many_pixels`. A worker decodes one photo at a time and a container one such "
        "large decode, so two workers stay inside 512 MB.",
    )
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = Field(
        DEFAULT_TOP_K,
        description=f"Breeds listed per answer (1–{MAX_TOP_K}), in the API's `top_k` and the "
        "bot's replies; `?top_k=` overrides it per request.",
    )
    log_level: str = Field("INFO", description="Log level of the app and gunicorn.")

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.strip().upper() or "INFO"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def decode_budget_bytes(self) -> int:
        return int(self.decode_budget_mb * 2**20)


class FrontSettings(BaseSettings):
    """Deadlines and bounds that keep one worker safe from slow or greedy clients."""

    model_config = _config()

    body_idle_timeout_s: PositiveFloat = Field(
        10.0, description="A client that sends no body byte for this long gets `408`."
    )
    body_timeout_s: PositiveFloat = Field(
        30.0,
        description="The whole body must arrive within this many seconds of the headers, or `408`.",
    )
    body_memory_mb: PositiveFloat = Field(
        32.0,
        description="Request bodies one worker holds in memory; beyond it they wait in "
        "temporary files.",
    )
    app_queue_size: PositiveInt = Field(
        64,
        description="Complete requests waiting for a worker's app thread; beyond it `503` + "
        "`Retry-After: 1`.",
    )
    graceful_timeout: PositiveFloat = Field(
        25.0,
        description="Seconds a worker has to drain after SIGTERM (below Heroku's 30 s kill).",
    )
    worker_connections: PositiveInt = Field(
        500,
        description="Simultaneous connections per worker (each a coroutine and a file "
        "descriptor); beyond it `503`.",
    )

    @property
    def body_memory_bytes(self) -> int:
        return int(self.body_memory_mb * 2**20)


class ServerSettings(BaseSettings):
    """gunicorn's own: where it listens, how many workers, logs and metrics files."""

    model_config = _config(ignore_empty=False)

    host: str = Field(
        "0.0.0.0", description="Interface gunicorn binds (`127.0.0.1` under `make run`)."
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        8000, description="Port gunicorn listens on (Heroku sets it)."
    )
    web_concurrency: PositiveInt = Field(
        2, description="gunicorn worker processes; each loads its own copy of the model."
    )
    gunicorn_timeout: PositiveInt = Field(
        25,
        description="Seconds before a stuck worker is killed and replaced (below Heroku's "
        "30 s router timeout).",
    )
    access_log: str = Field(
        "-",
        description="gunicorn access log target (`-` = stdout); empty disables it.",
    )
    prometheus_multiproc_dir: Path | None = Field(
        None,
        description="Where workers write their metrics for `/metrics`. Unset: a folder in the "
        "server's temporary folder (removed at exit); set or not, it is emptied at start.",
    )


class StateSettings(BaseSettings):
    """What several replicas of the service share (one container needs none of it)."""

    model_config = _config()

    redis_url: str | None = Field(
        None,
        description="Redis for state shared by replicas (the bot's answered updates and "
        "leases, the photos kept for feedback), e.g. Heroku Redis' `redis://…` or "
        "`rediss://…` (TLS; its self-signed certificate is accepted). Unset: each server "
        "keeps that state in `TELEGRAM_SEEN_DB` and `FEEDBACK_RECENT_DIR`.",
    )


class ClientLimitsSettings(BaseSettings):
    """How much one client may ask (docs/api.md): sized for people, not for scripts."""

    model_config = _config("RATE_LIMIT_")

    enabled: bool = Field(
        True,
        description="Limit `POST /predict` and `POST /feedback` per client; over budget they "
        "answer `429 rate_limited` with `Retry-After`. Loopback requests without "
        "`X-Forwarded-For` (local tools, health checks, benchmarks) are never limited.",
    )
    predict: str = Field(
        "30/minute;300/hour",
        description="`POST /predict` per client, as the `limits` library writes it (`N/minute`, "
        "`N/hour`, `N/day`…, several joined by `;`): a person sends a photo every few seconds "
        "at most, and rarely 300 in an hour; a script looping on one worker is stopped within "
        "a minute, so the other clients keep theirs.",
    )
    feedback: str = Field(
        "30/minute;300/hour",
        description="`POST /feedback` per client, the same way: one correction per answer, so "
        "as many as `/predict`'s.",
    )
    proxy_hops: Annotated[int, Field(ge=0, le=10)] = Field(
        1,
        validation_alias=AliasChoices("PROXY_HOPS"),
        description="Proxies in front of the service that append the client's address to "
        "`X-Forwarded-For` (Heroku's router: 1). The client is the address that many entries "
        "from the end; entries a client sends itself are ignored. `0`: the TCP peer is the "
        "client (no proxy in front).",
    )

    @field_validator("predict", "feedback")
    @classmethod
    def _limit_syntax(cls, value: str) -> str:
        if not _LIMITS_RE.match(value):
            raise ValueError("must be limits like '30/minute;300/hour'")
        return value.strip()


class FeedbackSettings(BaseSettings):
    """Corrections sent by users (docs/feedback.md); without `FEEDBACK_URI` feedback is off."""

    model_config = _config("FEEDBACK_")

    uri: str | None = Field(
        None,
        description="Where corrections are stored: a folder path, `file://…` or "
        "`s3://bucket/prefix`. Unset: feedback is off (no buttons, `POST /feedback` answers "
        "`404`).",
    )
    keep_s: PositiveFloat = Field(
        3600.0,
        description="Seconds the photo behind an answer is kept for feedback; later, "
        "`POST /feedback` answers `404 unknown_answer`.",
    )
    keep_photos: PositiveInt = Field(
        1000, description="Most photos kept for feedback at once (the oldest go first)."
    )
    keep_mb: PositiveFloat = Field(
        500.0,
        description="Most megabytes of photos kept for feedback on disk (the oldest go first).",
    )
    keep_redis_mb: PositiveFloat = Field(
        12.0,
        description="Most megabytes of photos (and their answers) kept for feedback in Redis "
        "when `REDIS_URL` is set, the oldest going first: Heroku Redis mini holds 25 MB, "
        "shared with the bot's ledger and the client limits (~60 photos of 1024 px).",
    )
    photo_side: Annotated[int, Field(ge=224, le=4096)] = Field(
        1024,
        description="Longest side, in pixels, of a photo kept for feedback: it is stored "
        "upright, re-encoded as JPEG without EXIF, XMP, GPS or colour profile, and shrunk to "
        "this (the lab trains at 224 px).",
    )
    recent_dir: Path | None = Field(
        None,
        description="Folder of the photos kept for feedback, shared by the workers of one "
        "server when `REDIS_URL` is unset. Unset: gunicorn.conf.py makes a fresh temporary "
        "folder.",
    )

    @property
    def keep_bytes(self) -> int:
        return int(self.keep_mb * 2**20)

    @property
    def keep_redis_bytes(self) -> int:
        return int(self.keep_redis_mb * 2**20)


class TelegramSettings(BaseSettings):
    """The Telegram bot (docs/telegram.md); without a token and a secret it is off."""

    model_config = _config("TELEGRAM_")

    token: str | None = Field(
        None,
        description="The bot token from @BotFather. Unset: the bot is off, `POST /telegram` "
        "answers `404`, `/predict` is unaffected.",
    )
    secret_token: str | None = Field(
        None,
        description="Secret Telegram sends with every update (1–256 of `A-Z a-z 0-9 _ -`). "
        "Required: with a token but no valid secret the bot stays off (anyone could otherwise "
        "make it message any chat).",
    )
    api_base_url: str = Field(
        "https://api.telegram.org/bot",
        description="Bot API base (the token is appended), e.g. a self-hosted Bot API server.",
    )
    file_base_url: str = Field(
        "https://api.telegram.org/file/bot",
        description="File download base (the token is appended the same way).",
    )
    max_file_mb: PositiveFloat = Field(
        20.0, description="Largest file the bot downloads (the public Bot API refuses more)."
    )
    concurrent_updates: PositiveInt = Field(
        8,
        description="Updates answered at once per worker (more wait their turn on the event loop).",
    )
    model_workers: PositiveInt = Field(
        1, description="Threads per worker running the model for the bot."
    )
    startup_timeout_s: PositiveFloat = Field(
        15.0, description="How long the first update waits for the bot to start (`getMe`)."
    )
    answer_timeout_s: PositiveFloat = Field(
        20.0,
        description="How long a webhook call waits for the bot's answer before it answers "
        "`503` (Telegram then delivers the update again).",
    )
    send_timeout_s: PositiveFloat = Field(
        15.0,
        description="How long a message send waits for the Bot API's answer (cut to what "
        "is left of `TELEGRAM_ANSWER_TIMEOUT_S`). A send that times out may have been "
        "delivered: it is never sent again, and never apologised for.",
    )
    send_attempts: PositiveInt = Field(
        3,
        description="Tries of a send the Bot API answered `5xx` or could not be reached for "
        "(with back-off, within the answer's deadline); then Telegram delivers the update "
        "again later and the reply made is sent without a second download or model call.",
    )
    chat_interval_s: PositiveFloat = Field(
        1.0,
        description="Least time between two messages to one private chat (Telegram allows "
        "about one a second), across workers and replicas.",
    )
    group_interval_s: PositiveFloat = Field(
        3.0,
        description="Least time between two messages to one group (Telegram allows about "
        "20 a minute).",
    )
    messages_per_s: PositiveFloat = Field(
        25.0,
        description="Most Bot API calls that send or answer, per second, for the whole bot "
        "(Telegram allows about 30): shared through Redis with `REDIS_URL`, else by the "
        "workers of one server.",
    )
    photos_per_minute: PositiveInt = Field(
        20,
        description="Photos one chat may have recognised per minute; the first one over it is "
        'answered "too many photos, send it again in a minute", the rest quietly, so one '
        "chat cannot starve the others.",
    )
    seen_db: Path | None = Field(
        None,
        description="SQLite file of the updates answered (and being answered), shared by the "
        "workers of one server when `REDIS_URL` is unset. Unset: gunicorn.conf.py makes one in "
        "a fresh temporary folder.",
    )
    app_url: str | None = Field(
        None,
        validation_alias=AliasChoices("APP_URL"),
        description="Only for `python -m service.telegram_bot set`: the app's public "
        "`https://` address.",
    )

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def disabled_reason(self) -> str | None:
        """Why the webhook route is off, or None when the bot runs."""
        if not self.token:
            return "TELEGRAM_TOKEN is not set"
        if not self.secret_token:
            return "TELEGRAM_SECRET_TOKEN is not set (refusing to accept unauthenticated updates)"
        if not _SECRET_RE.match(self.secret_token):
            return "TELEGRAM_SECRET_TOKEN must be 1-256 characters of A-Z a-z 0-9 _ -"
        return None


GROUPS: dict[str, type[BaseSettings]] = {
    "model": ModelSettings,
    "api": ApiSettings,
    "front": FrontSettings,
    "server": ServerSettings,
    "state": StateSettings,
    "limits": ClientLimitsSettings,
    "feedback": FeedbackSettings,
    "telegram": TelegramSettings,
}


class Settings(BaseModel, frozen=True):
    """The whole tree. A bad bot setting keeps the bot off (``telegram_error``), not the API."""

    model: ModelSettings
    api: ApiSettings
    front: FrontSettings
    server: ServerSettings
    state: StateSettings
    limits: ClientLimitsSettings
    feedback: FeedbackSettings
    telegram: TelegramSettings
    telegram_error: str | None = None

    def model_threads(self) -> int:
        """Threads each worker's model runs on: ``MODEL_THREADS``, else the cores split
        between the workers so they don't oversubscribe them (docs/benchmark.md)."""
        return self.model.threads or max(1, cpu_count() // self.server.web_concurrency)

    def shared_by_workers(self, folder: Path) -> Settings:
        """These settings with what the workers of one server share placed in ``folder``
        where unset: the metrics files, and without Redis the bot's answered updates and
        the photos kept for feedback."""
        server, telegram, feedback = self.server, self.telegram, self.feedback
        local = self.state.redis_url is None
        if server.prometheus_multiproc_dir is None:
            server = server.model_copy(update={"prometheus_multiproc_dir": folder / "metrics"})
        if local and telegram.seen_db is None:
            telegram = telegram.model_copy(update={"seen_db": folder / "telegram-seen.sqlite"})
        if local and feedback.uri is not None and feedback.recent_dir is None:
            feedback = feedback.model_copy(update={"recent_dir": folder / "recent"})
        return self.model_copy(
            update={"server": server, "telegram": telegram, "feedback": feedback}
        )


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask respects container CPU limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def env_name(group: type[BaseSettings], field: str) -> str:
    info = group.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return (group.model_config.get("env_prefix", "") + field).upper()


_REASONS = {
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "must be {expected}",
}


def _one_line(group: type[BaseSettings], exc: ValidationError) -> str:
    """``NAME must be …, got '…'`` for the first bad variable of a group."""
    error = exc.errors()[0]
    name = env_name(group, str(error["loc"][0]))
    reason = _REASONS.get(error["type"], error["msg"]).format(**error.get("ctx", {}))
    return f"{name} {reason}, got {error['input']!r}"


Group = TypeVar("Group", bound=BaseSettings)


def load_group(group: type[Group]) -> Group:
    """One group of the tree (the webhook command needs only the bot's)."""
    try:
        return group()
    except ValidationError as exc:
        raise SettingsError(_one_line(group, exc)) from None


def load_settings() -> Settings:
    """Read the environment once; raise SettingsError naming the first bad variable."""
    try:
        telegram, telegram_error = load_group(TelegramSettings), None
    except SettingsError as exc:
        telegram, telegram_error = TelegramSettings.model_construct(), str(exc)
    groups = {name: load_group(cls) for name, cls in GROUPS.items() if name != "telegram"}
    return Settings(**groups, telegram=telegram, telegram_error=telegram_error)


_server_settings: Settings | None = None


def publish_server_settings(settings: Settings) -> Settings:
    """Make ``settings`` this server's (the gunicorn master does, before the fork: every
    worker inherits them, read once)."""
    global _server_settings
    _server_settings = settings
    return settings


def server_settings() -> Settings:
    """This server's settings: those the master published, else read now (one process)."""
    return _server_settings or settings_or_exit()


def settings_or_exit() -> Settings:
    """The settings, or one CRITICAL line naming the bad variable and exit code 3."""
    try:
        return load_settings()
    except SettingsError as exc:
        logging.basicConfig()
        logging.getLogger("breedrecognizer").critical(
            "refusing to start: bad configuration: %s", exc
        )
        raise SystemExit(BOOT_FAILURE_EXIT) from None


def _default(group: type[BaseSettings], field: str) -> str:
    """The default as the reference shows it: the same on every machine and checkout."""
    value = group.model_fields[field].default
    if value is None:
        return "unset"
    if isinstance(value, float):
        return f"`{value:g}`"
    text = str(value).replace(f"{REPO_ROOT}{os.sep}", "")
    return f"`{text.replace(tempfile.gettempdir(), '$TMPDIR')}`"


def reference() -> str:
    """docs/settings.md: every variable, its default and meaning, grouped as in the tree."""
    lines = [
        "# Settings",
        "",
        "Generated by `python -m service.settings` from `service/settings.py`; do not edit by "
        "hand. Every setting is an environment variable; none is required, and an empty one "
        "counts as unset. A bad value stops the start with one line naming it (a bad bot "
        "setting only keeps the bot off).",
        "",
        "S3 access for `s3://` model URIs uses boto3's own variables (`AWS_ACCESS_KEY_ID`, "
        "`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`, "
        "`AWS_ENDPOINT_URL` for S3-compatible stores, …), read by boto3 itself.",
    ]
    for name, group in GROUPS.items():
        lines += ["", f"## {name}", "", str(group.__doc__), "", "| Variable | Default | Meaning |"]
        lines.append("|---|---|---|")
        for field, info in group.model_fields.items():
            lines.append(
                f"| `{env_name(group, field)}` | {_default(group, field)} | {info.description} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.settings", description="Write the settings reference."
    )
    parser.add_argument("--out", type=Path, default=REFERENCE_PATH)
    args = parser.parse_args(argv)
    args.out.write_text(reference(), encoding="utf-8")
    print(f"wrote {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
