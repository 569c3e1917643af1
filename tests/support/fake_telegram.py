"""A fake Telegram Bot API server over real HTTP, for the bot's tests and the benchmarks.

It implements the methods the bot calls (getMe, getFile, file download, sendMessage,
sendChatAction, answerCallbackQuery, editMessageText, editMessageReplyMarkup, setWebhook,
deleteWebhook, getWebhookInfo), answers in the Bot API's ``{"ok": ..., "result": ...}``
envelope, keeps the messages the bot sent (text and inline keyboard, as edits leave them) and
records every call with its result, so callers can check what the bot sent and press its
buttons. It misbehaves on demand as the real one does (``fail``, ``slow``): 5xx, 403 (the user
blocked the bot), 400 (chat not found), 429 with ``retry_after`` (enforced: a call to that chat
inside the window is refused again and listed in ``flood_violations``), slow answers:

    with FakeTelegram() as fake:
        file_id = fake.add_file(jpeg_bytes())
        env = fake.env()  # TELEGRAM_TOKEN, TELEGRAM_API_BASE_URL, TELEGRAM_FILE_BASE_URL
        ... post an update to the app ...
        [reply] = fake.wait_for("sendMessage", 1)
        message = fake.message(reply)  # as it stands now, with its reply_markup
        ... post Updates().callback_query(message, data="...") to the app ...
        fake.fail("sendMessage", chat_id=7, status=429, retry_after=3)  # flood control

Below it, Telegram's side of the webhook: the secret the test servers run with, posting an
update to a server as Telegram does, and pressing the buttons under a message the bot sent.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.support.gunicorn_server import GunicornServer

TOKEN = "123456789:TEST-fake-token_for-breedrecognizer"
BOT_USER = {
    "id": 123456789,
    "is_bot": True,
    "first_name": "BreedRecognizer",
    "username": "breedrecognizer_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
# Parameters PTB sends as plain strings; everything else arrives JSON-encoded.
_STRING_PARAMS = {
    "text",
    "file_id",
    "url",
    "secret_token",
    "action",
    "callback_query_id",
    "inline_message_id",
}
# What Telegram answers when a callback query is answered late or twice.
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
# What Telegram answers a message to a chat that will not take it, and to a flood.
BLOCKED = "Forbidden: bot was blocked by the user"
CHAT_NOT_FOUND = "Bad Request: chat not found"
TOO_MANY_REQUESTS = "Too Many Requests: retry after {seconds}"


@dataclass(frozen=True)
class Call:
    """One request the bot made: method name, decoded parameters, arrival time, and what the
    fake answered (``result``, or the Bot API ``error`` description)."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    result: Any = None
    error: str | None = None


class ApiError(Exception):
    """A Bot API error answer: HTTP status, description and, for a 429, ``retry_after``."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.retry_after = status, description, retry_after


@dataclass
class Fault:
    """How the next ``times`` calls of ``method`` (to ``chat_id`` only, if given; ``times``
    None: every one) misbehave: an error answer (``status`` > 0), or a slow success."""

    method: str
    times: int | None
    chat_id: Any = None
    status: int = 0
    description: str = ""
    retry_after: int | None = None
    delay_s: float = 0.0

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        if method != self.method or self.times == 0:
            return False
        return self.chat_id is None or params.get("chat_id") == self.chat_id


@dataclass
class StoredFile:
    file_id: str
    path: str
    data: bytes
    fail_download: int | None = None  # HTTP status to answer the download with, if any
    fail_get_file: str | None = None  # Bot API error description to answer getFile with
    delay_s: float = 0.0  # how long the download takes (a slow network, a big file)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """The recorded calls say it all; no access log (it would show the token)."""


class FakeTelegram:
    """The server; ``start()``/``stop()`` or use it as a context manager."""

    def __init__(self, token: str = TOKEN, port: int = 0) -> None:
        self.token = token
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._files: dict[str, StoredFile] = {}
        self._messages: dict[tuple[Any, Any], dict[str, Any]] = {}  # (chat id, message id)
        self._answered_queries: set[str] = set()
        self._expired_queries: set[str] = set()
        self._faults: list[Fault] = []
        self._flood_until: dict[Any, float] = {}  # chat id -> end of its retry_after window
        self.flood_violations: list[Call] = []  # calls made to a chat inside its window
        self._ids = itertools.count(1)
        self.webhook: dict[str, Any] = {}
        self._server = make_server(
            "127.0.0.1", port, self._build_app(), threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle and URLs -------------------------------------------------------------

    def start(self) -> FakeTelegram:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    def env(self) -> dict[str, str]:
        return {
            "TELEGRAM_TOKEN": self.token,
            "TELEGRAM_API_BASE_URL": self.api_base_url,
            "TELEGRAM_FILE_BASE_URL": self.file_base_url,
        }

    # -- test-side API -------------------------------------------------------------------

    def add_file(
        self,
        data: bytes,
        suffix: str = "jpg",
        fail_download: int | None = None,
        fail_get_file: str | None = None,
        delay_s: float = 0.0,
    ) -> str:
        """Make ``data`` downloadable; returns its file_id (use it in update JSON)."""
        n = next(self._ids)
        stored = StoredFile(
            f"FILE{n:06d}", f"photos/file_{n}.{suffix}", data, fail_download, fail_get_file, delay_s
        )
        with self._lock:
            self._files[stored.file_id] = stored
        return stored.file_id

    def message(self, sent: Call) -> dict[str, Any]:
        """The message a sendMessage call made, as edits left it (with its reply_markup)."""
        key = (sent.result["chat"]["id"], sent.result["message_id"])
        with self._lock:
            return copy.deepcopy(self._messages[key])

    def expire_callback_query(self, query_id: str) -> None:
        """Make answering this callback query fail as Telegram does once it is too old."""
        with self._lock:
            self._expired_queries.add(query_id)

    def fail(
        self,
        method: str,
        times: int | None = 1,
        *,
        chat_id: Any = None,
        status: int = 502,
        description: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (None: all; to ``chat_id`` only, if
        given) with an error: 502 Bad Gateway unless told otherwise, e.g. ``status=403,
        description=BLOCKED``, or ``status=429, retry_after=3`` (flood control)."""
        if description is None:
            description = {429: TOO_MANY_REQUESTS.format(seconds=retry_after)}.get(
                status, "Bad Gateway"
            )
        fault = Fault(method, times, chat_id, status, description, retry_after)
        with self._lock:
            self._faults.append(fault)

    def slow(self, method: str, delay_s: float, times: int | None = 1, chat_id: Any = None) -> None:
        """Answer the next ``times`` calls of ``method`` only after ``delay_s`` (and do what
        they ask: a slow send is still delivered)."""
        with self._lock:
            self._faults.append(Fault(method, times, chat_id, delay_s=delay_s))

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def wait_for(
        self,
        method: str,
        count: int,
        timeout: float = 30.0,
        where: Callable[[Call], bool] = lambda call: True,
    ) -> list[Call]:
        """Wait until ``count`` matching calls arrived; raise (listing what came) if not."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.calls(method) if where(c)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(c.method, c.params) for c in self.calls()]
                raise AssertionError(
                    f"expected {count} {method} calls, got {len(found)} in {timeout}s; "
                    f"all calls: {seen}"
                )
            time.sleep(0.05)

    # -- the HTTP side ----------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("fake_telegram")

        @app.route("/bot<token>/<method>", methods=["GET", "POST"])
        def bot_api(token: str, method: str) -> Response:
            if token != self.token:
                return _error(401, "Unauthorized")
            at = time.monotonic()
            params = _decode_params()
            handler = getattr(self, f"_api_{method}", None)
            try:
                if handler is None:
                    raise ApiError(404, "Not Found: method not found")
                self._misbehave(method, params, at)
                result = handler(params)
            except ApiError as exc:
                with self._lock:
                    self._calls.append(Call(method, params, at, error=exc.description))
                return _error(exc.status, exc.description, exc.retry_after)
            with self._lock:
                self._calls.append(Call(method, params, at, result))
            return _ok(result)

        @app.get("/file/bot<token>/<path:file_path>")
        def download(token: str, file_path: str) -> Response:
            if token != self.token:
                return _error(401, "Unauthorized")
            with self._lock:
                self._calls.append(Call("download", {"file_path": file_path}))
                stored = next((f for f in self._files.values() if f.path == file_path), None)
            if stored is None:
                return _error(404, "Not Found")
            if stored.fail_download:
                return _error(stored.fail_download, "Internal Server Error")
            time.sleep(stored.delay_s)
            return Response(stored.data, mimetype="application/octet-stream")

        return app

    def _misbehave(self, method: str, params: dict[str, Any], at: float) -> None:
        """Enforce a chat's flood window, then apply the first fault that matches."""
        chat_id = params.get("chat_id")
        with self._lock:
            until = self._flood_until.get(chat_id, 0.0) if chat_id is not None else 0.0
            if at < until:
                self.flood_violations.append(Call(method, params, at))
                seconds = max(1, round(until - at))
                raise ApiError(429, TOO_MANY_REQUESTS.format(seconds=seconds), seconds)
            fault = next((f for f in self._faults if f.matches(method, params)), None)
            if fault is not None and fault.times is not None:
                fault.times -= 1
            if fault is not None and fault.retry_after and chat_id is not None:
                self._flood_until[chat_id] = at + fault.retry_after
        if fault is None:
            return
        if fault.status:
            raise ApiError(fault.status, fault.description, fault.retry_after)
        time.sleep(fault.delay_s)

    def _api_getMe(self, params: dict[str, Any]) -> Any:  # noqa: N802 - Bot API name
        return BOT_USER

    def _api_getFile(self, params: dict[str, Any]) -> Any:  # noqa: N802
        with self._lock:
            stored = self._files.get(str(params.get("file_id")))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if stored.fail_get_file:
            raise ApiError(400, stored.fail_get_file)
        return {
            "file_id": stored.file_id,
            "file_unique_id": f"U{stored.file_id}",
            "file_size": len(stored.data),
            "file_path": stored.path,
        }

    def _api_sendMessage(self, params: dict[str, Any]) -> Any:  # noqa: N802
        if not params.get("text"):
            raise ApiError(400, "Bad Request: message text is empty")
        message = {
            "message_id": 100_000 + next(self._ids),
            "date": int(time.time()),
            "chat": {"id": params["chat_id"], "type": "private"},
            "from": BOT_USER,
            "text": params["text"],
        }
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        with self._lock:
            self._messages[(message["chat"]["id"], message["message_id"])] = message
            return copy.deepcopy(message)

    def _api_sendChatAction(self, params: dict[str, Any]) -> Any:  # noqa: N802
        return True

    def _api_answerCallbackQuery(self, params: dict[str, Any]) -> Any:  # noqa: N802
        query_id = str(params.get("callback_query_id", ""))
        with self._lock:
            if not query_id or query_id in self._answered_queries | self._expired_queries:
                raise ApiError(400, QUERY_TOO_OLD)
            self._answered_queries.add(query_id)
        return True

    def _api_editMessageText(self, params: dict[str, Any]) -> Any:  # noqa: N802
        if not params.get("text"):
            raise ApiError(400, "Bad Request: message text is empty")
        return self._edit(params, params["text"])

    def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> Any:  # noqa: N802
        return self._edit(params, None)

    def _edit(self, params: dict[str, Any], text: str | None) -> dict[str, Any]:
        """Telegram's edit: the keyboard is the one given (none given: removed)."""
        key = (params.get("chat_id"), params.get("message_id"))
        with self._lock:
            message = self._messages.get(key)
            if message is None:
                raise ApiError(400, "Bad Request: message to edit not found")
            edited = {k: v for k, v in message.items() if k != "reply_markup"}
            if text is not None:
                edited["text"] = text
            if params.get("reply_markup"):
                edited["reply_markup"] = params["reply_markup"]
            if edited == message:
                raise ApiError(400, NOT_MODIFIED)
            edited["edit_date"] = int(time.time())
            self._messages[key] = edited
            return copy.deepcopy(edited)

    def _api_setWebhook(self, params: dict[str, Any]) -> Any:  # noqa: N802
        if not str(params.get("url", "")).startswith("https://"):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        with self._lock:
            self.webhook = dict(params)
        return True

    def _api_deleteWebhook(self, params: dict[str, Any]) -> Any:  # noqa: N802
        with self._lock:
            self.webhook = {}
        return True

    def _api_getWebhookInfo(self, params: dict[str, Any]) -> Any:  # noqa: N802
        with self._lock:
            hook = dict(self.webhook)
        info: dict[str, Any] = {
            "url": hook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": 0,
        }
        if hook.get("allowed_updates"):
            info["allowed_updates"] = hook["allowed_updates"]
        if hook.get("max_connections"):
            info["max_connections"] = hook["max_connections"]
        return info


def _decode_params() -> dict[str, Any]:
    """Bot API parameters arrive as a form (PTB's way), a JSON body or a query string."""
    if request.is_json:
        return dict(request.get_json(silent=True) or {})
    raw = {**request.args.to_dict(), **request.form.to_dict()}
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _STRING_PARAMS:
            params[key] = value
            continue
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _ok(result: Any) -> Response:
    return Response(json.dumps({"ok": True, "result": result}), mimetype="application/json")


def _error(status: int, description: str, retry_after: int | None = None) -> Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return Response(json.dumps(body), status=status, mimetype="application/json")


# Telegram numbers a bot's updates in one increasing sequence, whatever the chat; the bot
# answers a repeated update_id once, so every Updates instance draws from this one.
_UPDATE_IDS = itertools.count(900_001)
_QUERY_IDS = itertools.count(1)


class Updates:
    """Update JSON shaped as Telegram sends it to a webhook: unique update ids, and message ids
    counted per instance (one instance per chat)."""

    def __init__(self, chat_id: int = 4242, language_code: str = "en") -> None:
        self.chat_id = chat_id
        self.language_code = language_code
        self._ids = itertools.count(1)

    def _user(self, language_code: str | None) -> dict[str, Any]:
        user = {"id": self.chat_id, "is_bot": False, "first_name": "Ann", "username": "ann"}
        code = self.language_code if language_code is None else language_code
        if code:
            user["language_code"] = code
        return user

    def message(
        self,
        chat_type: str = "private",
        language_code: str | None = None,
        key: str = "message",
        **fields: Any,
    ) -> dict[str, Any]:
        n = next(self._ids)
        chat: dict[str, Any] = {"id": self.chat_id, "type": chat_type}
        if chat_type == "private":
            chat.update(first_name="Ann", username="ann")
        else:
            chat.update(id=-100_000 - self.chat_id, title="Dog lovers")
        message = {"message_id": n, "date": int(time.time()), "chat": chat, **fields}
        if key != "channel_post":
            message["from"] = self._user(language_code)
        return {"update_id": next(_UPDATE_IDS), key: message}

    def text(self, text: str, **kw: Any) -> dict[str, Any]:
        entities = []
        if text.startswith("/"):
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return self.message(text=text, **({"entities": entities} if entities else {}), **kw)

    def photo(self, file_id: str, size: int = 1000, **kw: Any) -> dict[str, Any]:
        """A photo message: Telegram lists sizes from the thumbnail up to the original."""
        sizes = [
            {"file_id": f"{file_id}-thumb", "file_unique_id": "t", "width": 90, "height": 68,
             "file_size": 1200},
            {"file_id": f"{file_id}-small", "file_unique_id": "s", "width": 320, "height": 240,
             "file_size": 15000},
            {"file_id": file_id, "file_unique_id": "l", "width": 1280, "height": 960,
             "file_size": size},
        ]  # fmt: skip
        return self.message(photo=sizes, **kw)

    def document(self, file_id: str, mime_type: str, size: int = 1000, **kw: Any):
        name = "dog.jpg" if mime_type.startswith("image/") else "notes.pdf"
        doc = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_name": name,
            "mime_type": mime_type,
            "file_size": size,
        }
        return self.message(document=doc, **kw)

    def sticker(self, **kw: Any) -> dict[str, Any]:
        sticker = {
            "file_id": "STICKER1",
            "file_unique_id": "st1",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "🐶",
        }
        return self.message(sticker=sticker, **kw)

    def callback_query(
        self,
        message: dict[str, Any] | None = None,
        data: str = "again",
        language_code: str | None = None,
    ) -> dict[str, Any]:
        """This user pressing a button with ``data`` under ``message`` (e.g. a message the bot
        sent, from ``FakeTelegram.message``); without one, under an old message of the chat.
        Every query gets its own id (``update["callback_query"]["id"]``)."""
        update_id = next(_UPDATE_IDS)
        if message is None:
            message = self.text("old message")["message"]
        query = {
            "id": f"CQ{next(_QUERY_IDS)}",
            "from": self._user(language_code),
            "chat_instance": f"ci-{self.chat_id}",
            "data": data,
            "message": message,
        }
        return {"update_id": update_id, "callback_query": query}


SECRET = "test-secret_0123456789"
HEADER = "X-Telegram-Bot-Api-Secret-Token"


def post_update(
    server: GunicornServer, update: Any, secret: str | None = SECRET, **kw: Any
) -> requests.Response:
    """POST ``update`` (JSON, or raw ``bytes``) to ``/telegram`` with the ``secret`` header."""
    headers = {HEADER: secret} if secret is not None else {}
    if isinstance(update, bytes):
        kw["data"] = update
        headers["Content-Type"] = "application/json"
    else:
        kw["json"] = update
    return requests.post(f"{server.base_url}/telegram", headers=headers, timeout=60, **kw)


def heic_document_update(fake: FakeTelegram, data: bytes, update_id: int) -> dict[str, Any]:
    """A phone's HEIC sent as a file (a document), in its own chat."""
    file_id = fake.add_file(data, suffix="heic")
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": 9000 + update_id, "type": "private"},
            "from": {"id": 9000 + update_id, "is_bot": False, "first_name": "B"},
            "document": {
                "file_id": file_id,
                "file_unique_id": file_id,
                "mime_type": "image/heic",
                "file_name": "phone.heic",
                "file_size": len(data),
            },
        },
    }


def bot_photo(
    base_url: str, fake: FakeTelegram, data: bytes, update_id: int, secret: str = SECRET
) -> int:
    """Deliver a HEIC document update to the webhook at ``base_url`` as Telegram does; the
    webhook's status."""
    response = requests.post(
        f"{base_url}/telegram",
        json=heic_document_update(fake, data, update_id),
        headers={HEADER: secret},
        timeout=120,
    )
    return response.status_code


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """The inline keyboard under ``message``: button text -> callback data (empty: none)."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return {button["text"]: button["callback_data"] for row in rows for button in row}


def answer_to(fake: FakeTelegram, press: dict[str, Any], timeout: float = 30.0) -> Call:
    """The answerCallbackQuery that answered this callback-query update."""
    query_id = press["callback_query"]["id"]
    [call] = fake.wait_for(
        "answerCallbackQuery",
        1,
        timeout,
        where=lambda c: c.params.get("callback_query_id") == query_id and c.error is None,
    )
    return call
