"""The bot's parts in one process: texts, feedback buttons, settings, size choice, the webhook
CLI, and the Flask route with the real model and a fake Bot API over HTTP for the cases that
need a particular model verdict or failure (unknown breed, unsure answer, model crash,
unreachable Bot API, feedback off or its stores failing).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from telegram import PhotoSize
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from app import build_front
from model.metadata import IMAGEWOOF_CLASSES, OpenSetRule
from model.predictor import BreedScore, Prediction, Predictor
from service.breed_names import BREED_NAMES
from service.feedback.store import NONE_LABEL
from service.settings import SettingsError, TelegramSettings, load_group
from service.telegram_bot.__main__ import main as webhook_cli
from service.telegram_bot.buttons import (
    MAX_CALLBACK_BYTES,
    Press,
    answer_keyboard,
    breeds_keyboard,
    is_feedback,
    parse_press,
)
from service.telegram_bot.handlers import pick_photo_size, surely_unsent
from service.telegram_bot.limits import retry_after_s
from service.telegram_bot.texts import (
    help_text,
    language_for,
    percent,
    prediction_text,
    text,
)
from tests.support.asgi import AsgiClient
from tests.support.fake_telegram import Call, FakeTelegram, Updates, answer_to, buttons
from tests.support.gunicorn_server import free_port
from tests.support.photos import jpeg_bytes
from tests.support.settings import settings_from, use_env

SECRET = "unit-secret"
HEADER = {"X-Telegram-Bot-Api-Secret-Token": SECRET}


# -- texts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "lang"),
    [("ru", "ru"), ("ru-RU", "ru"), ("RU", "ru"), ("en", "en"), ("de", "en"), (None, "en")],
)
def test_language_follows_language_code(code: str | None, lang: str) -> None:
    assert language_for(code) == lang


def test_percentages() -> None:
    assert [percent(x) for x in (0.873, 0.004, 1.0, 0.01)] == ["87%", "<1%", "100%", "1%"]


def _prediction(known: bool, verdict: str = "sure") -> Prediction:
    scores = zip(IMAGEWOOF_CLASSES[:3], (0.5, 0.3, 0.1), strict=True)
    top = tuple(BreedScore(c.wnid, c.name, p) for c, p in scores)
    verdict = verdict if known else "unknown"
    return Prediction(verdict=verdict, breed=top[0] if known else None, top_k=top, known_score=0.5)


def test_prediction_texts_in_both_languages() -> None:
    known_en = prediction_text(_prediction(True), "en", 10)
    assert known_en.startswith("My best guess: Shih-Tzu 🐶")
    assert "1. Shih-Tzu — 50%\n2. Rhodesian ridgeback — 30%\n3. Beagle — 10%" in known_en
    known_ru = prediction_text(_prediction(True), "ru", 10)
    assert known_ru.startswith("Похоже, это Ши-тцу 🐶")
    assert "2. Родезийский риджбек — 30%" in known_ru
    unknown_en = prediction_text(_prediction(False), "en", 10)
    assert "does not look like one of the 10 breeds I know" in unknown_en
    assert "1. Shih-Tzu — 50%" in unknown_en
    assert "не похоже ни на одну из 10 пород" in prediction_text(_prediction(False), "ru", 10)


def test_help_lists_every_breed() -> None:
    text = help_text(IMAGEWOOF_CLASSES, "en", 3)
    assert all(f"• {c.name}" in text for c in IMAGEWOOF_CLASSES)


def test_unsure_names_the_breed_with_a_doubt() -> None:
    unsure_en = prediction_text(_prediction(True, "unsure"), "en", 10)
    assert unsure_en.startswith("I think it's a Shih-Tzu, but I'm not sure")
    assert "1. Shih-Tzu — 50%\n2. Rhodesian ridgeback — 30%\n3. Beagle — 10%" in unsure_en
    unsure_ru = prediction_text(_prediction(True, "unsure"), "ru", 10)
    assert unsure_ru.startswith("Думаю, это Ши-тцу, но я не уверен")
    assert "Мои варианты:\n1. Ши-тцу — 50%\n2. Родезийский риджбек — 30%" in unsure_ru
    assert "не уверен" not in prediction_text(_prediction(True), "ru", 10)


def test_help_tells_of_kept_photos_only_with_feedback_on() -> None:
    assert "kept" not in help_text(IMAGEWOOF_CLASSES, "en", 3)
    on = help_text(IMAGEWOOF_CLASSES, "en", 3, feedback=True)
    assert "The photos you correct are kept to improve the model" in on
    assert "without your name" in on
    assert "сохраняются" in help_text(IMAGEWOOF_CLASSES, "ru", 3, feedback=True)
    assert "сохраняются" not in help_text(IMAGEWOOF_CLASSES, "ru", 3)


# -- feedback buttons ---------------------------------------------------------------------

ANSWER_ID = "Ab3_-x9ZQ0aa1234"


def test_buttons_round_trip_within_telegram_limits() -> None:
    named = IMAGEWOOF_CLASSES[2].wnid
    for lang in ("en", "ru"):
        rows = answer_keyboard(ANSWER_ID, named, lang).inline_keyboard
        right, wrong = rows[0]
        assert parse_press(right.callback_data) == Press(ANSWER_ID, named)
        assert parse_press(wrong.callback_data) == Press(ANSWER_ID, None)
        choices = [b for row in breeds_keyboard(ANSWER_ID, IMAGEWOOF_CLASSES, lang).inline_keyboard
                   for b in row]  # fmt: skip
        assert [parse_press(b.callback_data).label for b in choices] == [
            *(c.wnid for c in IMAGEWOOF_CLASSES),
            NONE_LABEL,
        ]
        every = [right, wrong, *choices]
        assert all(len(b.callback_data.encode()) <= MAX_CALLBACK_BYTES for b in every)
    assert choices[0].text == "Ши-тцу" and choices[-1].text == "Ни одна из этих"


@pytest.mark.parametrize(
    "data",
    ["fb:", "fb:x", f"fb:{ANSWER_ID}", f"fb:{ANSWER_ID}:ok", f"fb:{ANSWER_ID}:ok:wrong",
     f"fb:{ANSWER_ID}:wrong:n02088364", f"fb:{ANSWER_ID}:ok:n02088364:x", "fb::n02088364",
     f"fb:{ANSWER_ID}:n0208 8364", f"fb:{'a' * 33}:none", f"xx:{ANSWER_ID}:none"],
)  # fmt: skip
def test_garbled_button_data_is_no_press(data: str) -> None:
    assert parse_press(data) is None


def test_only_our_buttons_are_feedback() -> None:
    assert is_feedback("fb:") and is_feedback(f"fb:{ANSWER_ID}:none")
    assert not is_feedback(None) and not is_feedback("again") and not is_feedback("fbx:1")


# -- settings and photo size --------------------------------------------------------------


def _config(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> TelegramSettings:
    use_env(monkeypatch, env)
    return load_group(TelegramSettings)


def test_config_defaults_and_disabled_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(monkeypatch, {})
    assert config.api_base_url == "https://api.telegram.org/bot"
    assert config.file_base_url == "https://api.telegram.org/file/bot"
    assert config.max_file_bytes == 20 * 1024 * 1024
    assert config.disabled_reason == "TELEGRAM_TOKEN is not set"
    no_secret = _config(monkeypatch, {"TELEGRAM_TOKEN": "1:a"})
    assert "TELEGRAM_SECRET_TOKEN is not set" in no_secret.disabled_reason
    bad_secret = _config(monkeypatch, {"TELEGRAM_TOKEN": "1:a", "TELEGRAM_SECRET_TOKEN": "a b"})
    assert "A-Z a-z 0-9 _ -" in bad_secret.disabled_reason
    good = _config(monkeypatch, {"TELEGRAM_TOKEN": "1:a", "TELEGRAM_SECRET_TOKEN": "a_b-C9"})
    assert good.disabled_reason is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("TELEGRAM_CONCURRENT_UPDATES", "many"), ("TELEGRAM_MAX_FILE_MB", "0")],
)
def test_config_rejects_bad_numbers(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        _config(monkeypatch, {name: value})


def _size(file_id: str, side: int, file_size: int | None) -> PhotoSize:
    return PhotoSize(file_id, file_id, side, side, file_size)


def test_photo_size_is_the_largest_that_can_be_downloaded() -> None:
    sizes = (_size("s", 90, 1_000), _size("m", 800, 90_000), _size("l", 2560, 30_000_000))
    assert pick_photo_size(sizes, 20 * 1024 * 1024).file_id == "m"
    assert pick_photo_size(sizes, 10**9).file_id == "l"
    assert pick_photo_size((_size("x", 500, None),), 1).file_id == "x"  # size unknown: try it
    assert pick_photo_size((_size("l", 2560, 30_000_000),), 1_000) is None


# -- webhook CLI --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


def test_cli_sets_inspects_and_deletes_the_webhook(
    fake: FakeTelegram, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**fake.env(), "TELEGRAM_SECRET_TOKEN": SECRET, "APP_URL": "https://dogs.example.com/"}
    use_env(monkeypatch, env)
    assert webhook_cli(["set", "--max-connections", "10"]) == 0
    assert "https://dogs.example.com/telegram" in capsys.readouterr().out
    assert fake.webhook["url"] == "https://dogs.example.com/telegram"
    assert fake.webhook["secret_token"] == SECRET
    assert fake.webhook["allowed_updates"] == ["message", "callback_query"]
    assert fake.webhook["max_connections"] == 10
    assert webhook_cli(["info"]) == 0
    assert '"url": "https://dogs.example.com/telegram"' in capsys.readouterr().out
    assert webhook_cli(["delete", "--drop-pending-updates"]) == 0
    assert fake.webhook == {}
    assert fake.calls("deleteWebhook")[-1].params["drop_pending_updates"] is True


@pytest.mark.parametrize(
    ("command", "changes", "message"),
    [
        ("set", {"APP_URL": ""}, "APP_URL is not set"),
        ("set", {"APP_URL": "http://plain.example.com"}, "must be an https:// URL"),
        ("set", {"TELEGRAM_SECRET_TOKEN": ""}, "TELEGRAM_SECRET_TOKEN is not set"),
        ("info", {"TELEGRAM_TOKEN": ""}, "TELEGRAM_TOKEN is not set"),
        ("info", {"TELEGRAM_TOKEN": "1:wrong"}, "Telegram rejected TELEGRAM_TOKEN"),
        ("info", {"TELEGRAM_MAX_FILE_MB": "lots"}, "TELEGRAM_MAX_FILE_MB must be a number"),
        ("set", {"TELEGRAM_API_BASE_URL": "http://127.0.0.1:9/bot"}, "Telegram Bot API:"),
    ],
)
def test_cli_fails_with_one_line(
    fake: FakeTelegram,
    capsys,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    changes: dict[str, str],
    message: str,
) -> None:
    env = {**fake.env(), "TELEGRAM_SECRET_TOKEN": SECRET, "APP_URL": "https://dogs.example.com"}
    use_env(monkeypatch, {**env, **changes})
    assert webhook_cli([command]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "1:wrong" not in err  # the token never ends up in logs


# -- the route in one process --------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_uri()


@pytest.fixture
def app_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Build the front around a predictor, with a client on its own event loop; closed after
    (the lifespan's shutdown stops the bot)."""
    clients: list[AsgiClient] = []

    def build(predictor: Predictor, env: dict[str, str]) -> AsgiClient:
        client = AsgiClient(build_front(predictor, settings_from(monkeypatch, env)))
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def bot_app(predictor: Predictor, fake: FakeTelegram, app_client) -> Any:
    """Build the front with the bot enabled against the fake server."""

    def build(p: Predictor = predictor, **env: str) -> AsgiClient:
        return app_client(p, {**fake.env(), "TELEGRAM_SECRET_TOKEN": SECRET, **env})

    return build


def _reply_text(fake: FakeTelegram, chat_id: int) -> str:
    [call] = fake.wait_for("sendMessage", 1, where=lambda c: c.params["chat_id"] == chat_id)
    return call.params["text"]


def test_without_token_the_route_is_off_and_predict_works(
    predictor: Predictor, caplog, app_client
) -> None:
    with caplog.at_level(logging.INFO, logger="service.telegram_bot"):
        app = app_client(predictor, {})
    disabled = [r for r in caplog.records if "telegram bot disabled" in r.getMessage()]
    assert len(disabled) == 1 and disabled[0].levelno == logging.INFO
    assert "TELEGRAM_TOKEN is not set" in disabled[0].getMessage()
    client = app
    response = client.post("/telegram", json=Updates().text("/help"), headers=HEADER)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "telegram_disabled"
    anonymous = client.post("/telegram", json=Updates().text("/help"))
    assert anonymous.status_code == 403 and anonymous.json()["error"]["code"] == "forbidden"
    assert app.app.bot is None
    photo = {"content": jpeg_bytes(), "headers": {"Content-Type": "image/jpeg"}}
    predicted = client.post("/predict", **photo)
    assert predicted.status_code == 200 and predicted.json()["top_k"]


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"TELEGRAM_TOKEN": "1:a"}, "TELEGRAM_SECRET_TOKEN is not set"),
        ({"TELEGRAM_TOKEN": "1:a", "TELEGRAM_SECRET_TOKEN": "x", "TELEGRAM_MODEL_WORKERS": "-1"},
         "bad configuration: TELEGRAM_MODEL_WORKERS"),
    ],
)  # fmt: skip
def test_token_without_usable_settings_stays_off_loudly(
    predictor: Predictor, caplog, app_client, env: dict[str, str], reason: str
) -> None:
    with caplog.at_level(logging.INFO, logger="service.telegram_bot"):
        app = app_client(predictor, env)
    [record] = [r for r in caplog.records if "telegram bot disabled" in r.getMessage()]
    assert record.levelno >= logging.WARNING and reason in record.getMessage()
    assert app.post("/telegram", json={}, headers=HEADER).status_code == 404


def test_not_one_of_the_breeds_is_said_kindly(
    bot_app, predictor: Predictor, fake: FakeTelegram
) -> None:
    # The same model with an open-set rule no generated texture can pass.
    strict = Predictor(predictor.backend)
    strict.metadata = replace(predictor.metadata, open_set=OpenSetRule("max_softmax", 0.999))
    client = bot_app(strict)
    update = Updates(chat_id=2001).photo(fake.add_file(jpeg_bytes(seed=7)))
    assert client.post("/telegram", json=update, headers=HEADER).status_code == 200
    text = _reply_text(fake, 2001)
    assert "does not look like one of the 10 breeds I know" in text
    assert "1. " in text and "3. " in text


class _BrokenPredictor(Predictor):
    def predict_image(self, *args: Any, **kwargs: Any) -> Prediction:
        raise RuntimeError("model exploded")


def test_model_failure_gets_an_apology(bot_app, predictor: Predictor, fake: FakeTelegram) -> None:
    client = bot_app(_BrokenPredictor(predictor.backend))
    update = Updates(chat_id=2002, language_code="ru").photo(fake.add_file(jpeg_bytes()))
    assert client.post("/telegram", json=update, headers=HEADER).status_code == 200
    assert _reply_text(fake, 2002).startswith("Что-то пошло не так")
    # The bot keeps working afterwards.
    help_update = Updates(chat_id=2003).text("/help")
    assert client.post("/telegram", json=help_update, headers=HEADER).status_code == 200
    assert "Beagle" in _reply_text(fake, 2003)


def test_unreachable_bot_api_is_503_then_recovers(bot_app) -> None:
    """Nothing can be answered while the Bot API is down: let Telegram redeliver later."""
    port = free_port()  # nothing listens there yet
    app = bot_app(
        TELEGRAM_API_BASE_URL=f"http://127.0.0.1:{port}/bot",
        TELEGRAM_FILE_BASE_URL=f"http://127.0.0.1:{port}/file/bot",
        TELEGRAM_STARTUP_TIMEOUT_S="5",
    )
    client = app
    update = Updates(chat_id=2005).text("/start")
    response = client.post("/telegram", json=update, headers=HEADER)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json()["error"]["code"] == "telegram_unavailable"
    # The Bot API comes up; Telegram's redelivery of the same update now gets through.
    with FakeTelegram(port=port) as late:
        assert client.post("/telegram", json=update, headers=HEADER).status_code == 200
        assert "Beagle" in _reply_text(late, 2005)


def test_many_updates_through_one_loop(bot_app, fake: FakeTelegram) -> None:
    """Repeated updates reuse the one Application; closing leaves no pending work behind."""
    app = bot_app()
    client = app
    chats = range(2200, 2230)  # one chat each: a chat gets one message a second
    for chat in chats:
        update = Updates(chat_id=chat).text("/help")
        assert client.post("/telegram", json=update, headers=HEADER).status_code == 200
    fake.wait_for("sendMessage", 30, where=lambda c: c.params["chat_id"] in chats)
    runtime = app.app.bot
    assert runtime.application.running
    app.close()  # the lifespan's shutdown stops the Application
    assert not runtime.application.running


def test_rejected_token_is_503_and_never_logged(bot_app, caplog) -> None:
    with caplog.at_level(logging.INFO):
        app = bot_app(TELEGRAM_TOKEN="987:not-the-right-token")
        response = app.post("/telegram", json=Updates().text("/x"), headers=HEADER)
    assert response.status_code == 503
    assert "the Bot API rejected TELEGRAM_TOKEN" in caplog.text
    assert "not-the-right-token" not in caplog.text


def test_ignored_updates_are_logged_at_debug(bot_app, fake: FakeTelegram, caplog) -> None:
    app = bot_app()
    client = app
    updates = Updates(chat_id=2006)
    with caplog.at_level(logging.DEBUG, logger="service.telegram_bot"):
        edited = updates.text("x", key="edited_message")
        assert client.post("/telegram", json=edited, headers=HEADER).status_code == 200
        assert client.post("/telegram", content=b"[not json", headers=HEADER).status_code == 200
        deadline = time.monotonic() + 10
        while "telegram update ignored: edited_message" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
    assert "body is not a JSON object" in caplog.text
    assert not [c for c in fake.calls("sendMessage") if c.params["chat_id"] == 2006]


# -- feedback buttons through the route ------------------------------------------------------


def _sent(fake: FakeTelegram, chat_id: int) -> Call:
    [call] = fake.wait_for("sendMessage", 1, where=lambda c: c.params["chat_id"] == chat_id)
    return call


def _press(client: Any, fake: FakeTelegram, updates: Updates, sent: Call, data: str) -> Call:
    """Press ``data`` under the bot's message; the answer to that press."""
    update = updates.callback_query(fake.message(sent), data=data)
    assert client.post("/telegram", json=update, headers=HEADER).status_code == 200
    return answer_to(fake, update)


def _labels(store: Path) -> list[str]:
    return sorted(json.loads(p.read_text())["label"] for p in store.glob("records/*.json"))


def _photo_answer(client: Any, fake: FakeTelegram, updates: Updates) -> Call:
    update = updates.photo(fake.add_file(jpeg_bytes(seed=updates.chat_id)))
    assert client.post("/telegram", json=update, headers=HEADER).status_code == 200
    return _sent(fake, updates.chat_id)


def test_feedback_off_means_no_buttons(bot_app, fake: FakeTelegram) -> None:
    client = bot_app()
    updates = Updates(chat_id=2101)
    sent = _photo_answer(client, fake, updates)
    assert "reply_markup" not in sent.params and buttons(fake.message(sent)) == {}
    # A press on a button from the time feedback was on is answered, and nothing else.
    answered = _press(client, fake, updates, sent, f"fb:{'A' * 16}:ok:none")
    assert answered.params["text"] == "I am not taking corrections at the moment."
    edits = fake.calls("editMessageText") + fake.calls("editMessageReplyMarkup")
    assert [c for c in edits if c.params["chat_id"] == 2101] == []
    help_update = Updates(chat_id=2102).text("/help")
    assert client.post("/telegram", json=help_update, headers=HEADER).status_code == 200
    assert "kept" not in _sent(fake, 2102).params["text"]


def test_unsure_answer_in_russian_and_its_right_button(
    bot_app, predictor: Predictor, fake: FakeTelegram, tmp_path: Path
) -> None:
    # Every photo is one of the breeds, and never sure of which: the answer is unsure.
    unsure = Predictor(predictor.backend)
    unsure.metadata = replace(
        predictor.metadata,
        open_set=OpenSetRule("none", sure_method="max_softmax", sure_threshold=1.01),
    )
    client = bot_app(unsure, FEEDBACK_URI=str(tmp_path))
    updates = Updates(chat_id=2103, language_code="ru")
    sent = _photo_answer(client, fake, updates)
    assert sent.params["text"].startswith("Думаю, это ")
    assert ", но я не уверен" in sent.params["text"]
    keys = buttons(fake.message(sent))
    assert list(keys) == ["✅ Верно", "❌ Неверно"]
    named = keys["✅ Верно"].rsplit(":", 1)[1]
    named_ru = BREED_NAMES[named]["ru"]
    assert sent.params["text"].startswith(f"Думаю, это {named_ru}, но")
    assert (
        _press(client, fake, updates, sent, keys["✅ Верно"]).params["text"].startswith("Спасибо")
    )
    [record] = [json.loads(p.read_text()) for p in tmp_path.glob("records/*.json")]
    assert record["label"] == named and record["answer"]["verdict"] == "unsure"
    assert fake.message(sent)["text"].endswith("это фото поможет мне учиться.")


def test_right_under_not_my_breeds_stores_none(
    bot_app, predictor: Predictor, fake: FakeTelegram, tmp_path: Path
) -> None:
    strict = Predictor(predictor.backend)
    strict.metadata = replace(predictor.metadata, open_set=OpenSetRule("max_softmax", 0.999))
    client = bot_app(strict, FEEDBACK_URI=str(tmp_path))
    updates = Updates(chat_id=2104)
    sent = _photo_answer(client, fake, updates)
    assert "does not look like one of the 10 breeds" in sent.params["text"]
    keys = buttons(fake.message(sent))
    assert keys["✅ Right"].endswith(":ok:none")
    _press(client, fake, updates, sent, keys["✅ Right"])
    assert _labels(tmp_path) == ["none"]


def test_store_unavailable_says_try_later(bot_app, fake: FakeTelegram, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    client = bot_app(FEEDBACK_URI=str(blocker / "store"))
    updates = Updates(chat_id=2105)
    sent = _photo_answer(client, fake, updates)
    keys = buttons(fake.message(sent))
    answered = _press(client, fake, updates, sent, keys["✅ Right"])
    assert answered.params["text"] == "Sorry, I cannot save this right now. Please try again later."
    assert buttons(fake.message(sent)) == keys  # pressing again later can still work


def test_photo_not_kept_still_answered_without_buttons(
    bot_app, fake: FakeTelegram, tmp_path: Path
) -> None:
    recent = tmp_path / "recent"
    app = bot_app(FEEDBACK_URI=str(tmp_path / "store"), FEEDBACK_RECENT_DIR=str(recent))
    shutil.rmtree(recent)
    recent.write_text("a file where the kept photos' folder should be")
    sent = _photo_answer(app, fake, Updates(chat_id=2106))
    assert "does not look like one of the 10 breeds" in sent.params["text"]  # the answer
    assert "reply_markup" not in sent.params


def test_press_answered_only_once_the_bot_api_takes_the_answer(
    bot_app, fake: FakeTelegram, tmp_path: Path
) -> None:
    """An answer to a press that did not reach Telegram is a 503: Telegram delivers the press
    again, and the label is stored once. One Telegram refuses (too old) needs no redelivery."""
    client = bot_app(FEEDBACK_URI=str(tmp_path))
    updates = Updates(chat_id=2107)
    sent = _photo_answer(client, fake, updates)
    keys = buttons(fake.message(sent))
    update = updates.callback_query(fake.message(sent), data=keys["❌ Wrong"])
    fake.fail("answerCallbackQuery")
    response = client.post("/telegram", json=update, headers=HEADER)
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert client.post("/telegram", json=update, headers=HEADER).status_code == 200
    assert answer_to(fake, update).params["text"] == "Which breed is it?"
    beagle = buttons(fake.message(sent))["Beagle"]
    late = updates.callback_query(fake.message(sent), data=beagle)
    fake.expire_callback_query(late["callback_query"]["id"])
    assert client.post("/telegram", json=late, headers=HEADER).status_code == 200
    assert _labels(tmp_path) == ["n02088364"]
    assert buttons(fake.message(sent)) == {}


def _caused_by(error: Exception, cause: Exception) -> Exception:
    error.__cause__ = cause
    return error


def test_only_failures_before_sending_count_as_surely_unsent() -> None:
    """A timeout while reading the answer may follow a delivered message: never resent."""
    request = httpx.Request("POST", "http://bot.api/sendMessage")
    assert surely_unsent(NetworkError("Bad Gateway"))
    assert surely_unsent(_caused_by(TimedOut(), httpx.ConnectTimeout("c", request=request)))
    assert surely_unsent(_caused_by(TimedOut(), httpx.PoolTimeout("p", request=request)))
    assert not surely_unsent(_caused_by(TimedOut(), httpx.ReadTimeout("r", request=request)))
    assert not surely_unsent(_caused_by(TimedOut(), httpx.WriteTimeout("w", request=request)))
    assert surely_unsent(BadRequest("Bad Request: chat not found"))  # answered, so not sent


def test_retry_after_in_seconds_whatever_its_form() -> None:
    assert retry_after_s(RetryAfter(3)) == 3.0
    assert retry_after_s(RetryAfter(dt.timedelta(seconds=1.5))) == 1.5


@pytest.mark.parametrize(("lang", "start"), [("en", "You are sending photos faster"),
                                             ("ru", "Фото приходят быстрее")])  # fmt: skip
def test_over_budget_is_said_in_the_users_language(lang: str, start: str) -> None:
    said = text("over_budget", lang, budget=20)
    assert said.startswith(start) and "20" in said
