"""The bot end to end: real gunicorn (2 workers) talking to a fake Bot API over HTTP.

The ``fake`` and ``bot_server`` fixtures come from tests/conftest.py.

Updates are posted to ``/telegram`` as Telegram posts them; the assertions are on what the
bot sent to the fake Bot API (sendMessage, sendChatAction, getFile, answerCallbackQuery, the
edits of its messages) and, for the feedback buttons, on the corrections stored in
``FEEDBACK_URI`` (the ``feedback_dir`` folder).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from model.looks_like import LooksLike
from model.metadata import IMAGEWOOF_CLASSES
from service.breed_names import BREED_NAMES
from tests.support.data import data_dir, imagewoof_dir
from tests.support.fake_telegram import SECRET, Call, FakeTelegram, Updates, answer_to, buttons
from tests.support.fake_telegram import post_update as post
from tests.support.gunicorn_server import GunicornServer
from tests.support.images import png_bytes
from tests.support.photos import jpeg_bytes
from tests.support.server import start_gunicorn

RANK_LINE = re.compile(r"^\d\. .+ — (\d+%|<1%)$")


def reply_to(fake: FakeTelegram, update: dict[str, Any], timeout: float = 30.0) -> Call:
    """The sendMessage that answers this update's message (the bot always quotes it)."""
    message = update["message"]

    def answers(call: Call) -> bool:
        quoted = call.params.get("reply_parameters") or {}
        return (
            call.params.get("chat_id") == message["chat"]["id"]
            and quoted.get("message_id") == message["message_id"]
        )

    [call] = fake.wait_for("sendMessage", 1, timeout, where=answers)
    return call


def messages_to(fake: FakeTelegram, chat_id: int) -> list[Call]:
    return [c for c in fake.calls("sendMessage") if c.params.get("chat_id") == chat_id]


def assert_ranking(text: str, count: int = 3) -> list[str]:
    lines = [line for line in text.splitlines() if RANK_LINE.match(line)]
    assert len(lines) == count, text
    return lines


def test_photo_gets_top3_breeds(bot_server: GunicornServer, fake: FakeTelegram) -> None:
    file_id = fake.add_file(jpeg_bytes(1280, 960, seed=1))
    update = Updates(chat_id=1001).photo(file_id)
    response = post(bot_server, update)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    reply = reply_to(fake, update)
    assert reply.params["text"].startswith("My best guess: ")
    assert_ranking(reply.params["text"])
    # The largest size was fetched, and "typing..." was shown before the answer.
    assert [c.params["file_id"] for c in fake.calls("getFile") if c.params["file_id"] == file_id]
    actions = [c for c in fake.calls("sendChatAction") if c.params["chat_id"] == 1001]
    assert actions and actions[0].params["action"] == "typing"
    assert actions[0].at <= reply.at


def test_image_document_gets_breeds(bot_server: GunicornServer, fake: FakeTelegram) -> None:
    data = png_bytes(400, 300, seed=2)
    file_id = fake.add_file(data, suffix="png")
    update = Updates(chat_id=1002).document(file_id, "image/png", size=len(data))
    assert post(bot_server, update).status_code == 200
    text = reply_to(fake, update).params["text"]
    assert text.startswith("My best guess: ")
    assert_ranking(text)


def test_russian_user_gets_russian_answer(bot_server: GunicornServer, fake: FakeTelegram) -> None:
    file_id = fake.add_file(jpeg_bytes(640, 480, seed=3))
    update = Updates(chat_id=1003, language_code="ru-RU").photo(file_id)
    assert post(bot_server, update).status_code == 200
    text = reply_to(fake, update).params["text"]
    assert text.startswith("Похоже, это ")
    names = [line.split(". ", 1)[1].rsplit(" — ", 1)[0] for line in assert_ranking(text)]
    assert set(names) <= {by_lang["ru"] for by_lang in BREED_NAMES.values()}


@pytest.mark.parametrize(
    ("chat_id", "command", "language", "names"),
    [
        (1011, "/start", "en", [c.name for c in IMAGEWOOF_CLASSES]),
        (1012, "/help", "ru", [by_lang["ru"] for by_lang in BREED_NAMES.values()]),
        (1013, "/help@breedrecognizer_test_bot", "", [c.name for c in IMAGEWOOF_CLASSES]),
    ],
)
def test_start_and_help_list_the_breeds(
    bot_server: GunicornServer,
    fake: FakeTelegram,
    chat_id: int,
    command: str,
    language: str,
    names: list[str],
) -> None:
    update = Updates(chat_id=chat_id, language_code=language).text(command)
    assert post(bot_server, update).status_code == 200
    text = reply_to(fake, update).params["text"]
    assert "10" in text
    for name in names:
        assert f"• {name}" in text
    # Feedback is on here: the help says what happens to corrected photos.
    assert ("сохраняются" if language == "ru" else "The photos you correct are kept") in text


@pytest.mark.parametrize(
    ("chat_id", "kind", "expected"),
    [
        (1021, "text", "Send me a photo of a dog"),
        (1022, "sticker", "Nice sticker!"),
        (1023, "pdf", "This file is not an image (application/pdf)"),
        (1024, "unknown_command", "Send me a photo of a dog"),
    ],
)
def test_non_photos_get_a_hint(
    bot_server: GunicornServer, fake: FakeTelegram, chat_id: int, kind: str, expected: str
) -> None:
    updates = Updates(chat_id=chat_id)
    update = {
        "text": lambda: updates.text("what breed is my dog?"),
        "sticker": updates.sticker,
        "pdf": lambda: updates.document("DOC-PDF", "application/pdf"),
        "unknown_command": lambda: updates.text("/settings"),
    }[kind]()
    assert post(bot_server, update).status_code == 200
    assert expected in reply_to(fake, update).params["text"]
    assert not [c for c in fake.calls("getFile") if c.params["file_id"] == "DOC-PDF"]


def test_album_gets_one_answer_per_photo(bot_server: GunicornServer, fake: FakeTelegram) -> None:
    updates = Updates(chat_id=1030)
    album = [
        updates.photo(fake.add_file(jpeg_bytes(800, 600, seed=s)), media_group_id="13579")
        for s in (4, 5)
    ]
    for update in album:
        assert post(bot_server, update).status_code == 200
    for update in album:
        assert_ranking(reply_to(fake, update).params["text"])
    assert len(messages_to(fake, 1030)) == 2


def test_failures_are_apologised_for(bot_server: GunicornServer, fake: FakeTelegram) -> None:
    updates = Updates(chat_id=1040)
    broken = updates.document(fake.add_file(b"\xff\xd8\xff garbage"), "image/jpeg")
    lost = updates.photo(fake.add_file(jpeg_bytes(), fail_download=500))
    refused = updates.photo(
        fake.add_file(jpeg_bytes(), fail_get_file="Bad Request: file is too big")
    )
    huge = updates.document("HUGE", "image/jpeg", size=25 * 1024 * 1024)
    for update in (broken, lost, refused, huge):
        assert post(bot_server, update).status_code == 200
    assert "could not read this image" in reply_to(fake, broken).params["text"]
    assert "could not download" in reply_to(fake, lost).params["text"]
    assert "could not download" in reply_to(fake, refused).params["text"]
    assert "too large" in reply_to(fake, huge).params["text"]
    assert not [c for c in fake.calls("getFile") if c.params["file_id"] == "HUGE"]


def test_callback_query_is_answered(bot_server: GunicornServer, fake: FakeTelegram) -> None:
    press = Updates(chat_id=1050).callback_query()
    assert post(bot_server, press).status_code == 200
    assert answer_to(fake, press).params.get("text") is None  # not a button of ours


# -- feedback buttons ---------------------------------------------------------------------

WNID_BY_NAME = {c.name: c.wnid for c in IMAGEWOOF_CLASSES}
RECORD_FIELDS = {"answer_id", "photo_sha256", "label", "answer", "received_at"}
ANSWER_FIELDS = {"id", "breed", "verdict", "known", "known_score", "looks_like", "top_k", "model"}


def answered_photo(
    bot_server: GunicornServer, fake: FakeTelegram, updates: Updates, photo: bytes
) -> tuple[Call, dict[str, str]]:
    """Send a photo; its reply and the buttons under it."""
    update = updates.photo(fake.add_file(photo), size=len(photo))
    assert post(bot_server, update).status_code == 200
    reply = reply_to(fake, update)
    return reply, buttons(fake.message(reply))


def press(
    bot_server: GunicornServer, fake: FakeTelegram, updates: Updates, reply: Call, data: str
) -> Call:
    """Press the button with ``data`` under the bot's message; the answer to the press."""
    update = updates.callback_query(fake.message(reply), data=data)
    assert post(bot_server, update).status_code == 200
    return answer_to(fake, update)


def records(feedback_dir: Path, answer_id: str) -> list[dict[str, Any]]:
    found = sorted((feedback_dir / "records").glob(f"{answer_id}.json"))
    return [json.loads(path.read_text()) for path in found]


def test_answer_carries_right_and_wrong_buttons(
    bot_server: GunicornServer, fake: FakeTelegram
) -> None:
    reply, keys = answered_photo(bot_server, fake, Updates(chat_id=1101), jpeg_bytes(seed=41))
    assert list(keys) == ["✅ Right", "❌ Wrong"]
    named = reply.params["text"].removeprefix("My best guess: ").split(" 🐶")[0]
    right = re.fullmatch(r"fb:([A-Za-z0-9_-]{16}):ok:(n\d{8})", keys["✅ Right"])
    assert right and right[2] == WNID_BY_NAME[named]
    assert keys["❌ Wrong"] == f"fb:{right[1]}:wrong"
    assert all(len(data.encode()) <= 64 for data in keys.values())


def test_wrong_then_a_breed_stores_the_correction(
    bot_server: GunicornServer, fake: FakeTelegram, feedback_dir: Path
) -> None:
    updates = Updates(chat_id=1102)
    photo = jpeg_bytes(seed=42)
    reply, keys = answered_photo(bot_server, fake, updates, photo)
    answer_id = keys["❌ Wrong"].split(":")[1]
    assert press(bot_server, fake, updates, reply, keys["❌ Wrong"]).params["text"] == (
        "Which breed is it?"
    )
    # The buttons are now the ten breeds and "none of these"; nothing is stored yet.
    choices = buttons(fake.message(reply))
    assert list(choices) == [*(c.name for c in IMAGEWOOF_CLASSES), "None of these"]
    assert fake.message(reply)["text"] == reply.params["text"]
    assert records(feedback_dir, answer_id) == []
    named = keys["✅ Right"].rsplit(":", 1)[1]
    chosen = next(c for c in IMAGEWOOF_CLASSES if c.wnid != named)
    assert choices[chosen.name] == f"fb:{answer_id}:{chosen.wnid}"
    thanks = press(bot_server, fake, updates, reply, choices[chosen.name])
    assert thanks.params["text"].startswith("Thanks!")
    [record] = records(feedback_dir, answer_id)
    assert record["label"] == chosen.wnid
    kept = (feedback_dir / "photos" / record["photo_sha256"]).read_bytes()
    assert record["photo_sha256"] == hashlib.sha256(kept).hexdigest()
    assert record["answer"]["id"] == answer_id and record["answer"]["breed"]["wnid"] == named
    # Nothing of who pressed: no chat, user or name in the record, only these fields.
    assert set(record) == RECORD_FIELDS and set(record["answer"]) == ANSWER_FIELDS
    without_ids = {**record, "answer_id": "", "answer": {**record["answer"], "id": ""}}
    assert "Ann" not in json.dumps(without_ids)  # the user's first name
    # The message now thanks, and its buttons are gone.
    edited = fake.message(reply)
    assert edited["text"].startswith(reply.params["text"]) and "Thanks" in edited["text"]
    assert buttons(edited) == {}


def test_right_stores_the_named_breed_once(
    bot_server: GunicornServer, fake: FakeTelegram, feedback_dir: Path
) -> None:
    updates = Updates(chat_id=1103)
    reply, keys = answered_photo(bot_server, fake, updates, jpeg_bytes(seed=43))
    _, answer_id, _, named = keys["✅ Right"].split(":")
    thanks = press(bot_server, fake, updates, reply, keys["✅ Right"])
    assert thanks.params["text"].startswith("Thanks!")
    [record] = records(feedback_dir, answer_id)
    assert record["label"] == named == record["answer"]["breed"]["wnid"]
    [edit] = fake.wait_for("editMessageText", 1, where=lambda c: c.params["chat_id"] == 1103)
    assert "reply_markup" not in edit.params and buttons(fake.message(reply)) == {}
    # The same button pressed again (another device still showed it): thanks, stored once.
    again = press(bot_server, fake, updates, reply, keys["✅ Right"])
    assert again.params["text"].startswith("Thanks!")
    assert len(records(feedback_dir, answer_id)) == 1
    assert fake.message(reply)["text"].count("Thanks") == 1


FORGER = Updates(chat_id=1104)  # one chat for every case: its message ids go on counting


@pytest.mark.parametrize(
    "data",
    [
        "fb:{id}:n99999999",  # not one of the breeds
        "fb:{id}:ok",  # right, without the label it confirms
        "fb:{id}:wrong:n02088364",
        "fb:{id}:ok:none:x",
        "fb:{id}",
        "fb:",
        "fb:{id}:<script>",
        "fb:{id}:ok:" + "n" * 40,
    ],
)
def test_forged_buttons_store_nothing(
    bot_server: GunicornServer, fake: FakeTelegram, feedback_dir: Path, data: str
) -> None:
    reply, keys = answered_photo(bot_server, fake, FORGER, jpeg_bytes(seed=44))
    answer_id = keys["❌ Wrong"].split(":")[1]
    answered = press(bot_server, fake, FORGER, reply, data.format(id=answer_id))
    assert answered.params["text"] == "Sorry, I could not read this button."
    assert records(feedback_dir, answer_id) == []
    assert buttons(fake.message(reply)) == keys  # the real buttons are left as they were


def test_stale_answer_is_told_so_and_stores_nothing(
    bot_server: GunicornServer, fake: FakeTelegram, feedback_dir: Path
) -> None:
    updates = Updates(chat_id=1105, language_code="ru")
    reply, keys = answered_photo(bot_server, fake, updates, jpeg_bytes(seed=45))
    assert list(keys) == ["✅ Верно", "❌ Неверно"]
    _, answer_id, _, named = keys["✅ Верно"].split(":")
    unknown_id = "A" * 16  # an answer this server never gave (or no longer keeps)
    answered = press(bot_server, fake, updates, reply, f"fb:{unknown_id}:ok:{named}")
    assert answered.params["text"].startswith("Этот ответ уже не поправить")
    assert records(feedback_dir, unknown_id) == [] and records(feedback_dir, answer_id) == []
    assert buttons(fake.message(reply)) == {}  # buttons that cannot work are taken away


def test_other_updates_and_bad_bodies_are_ignored(
    bot_server: GunicornServer, fake: FakeTelegram
) -> None:
    quiet = Updates(chat_id=1060)
    ignored: list[Any] = [
        quiet.text("edited", key="edited_message"),
        quiet.text("news", key="channel_post", chat_type="channel"),
        quiet.text("chatting in a group", chat_type="supergroup"),
        {"update_id": 5, "poll": {"id": "p"}},  # not valid for PTB either
        {"update_id": "x", "message": "not a message"},
        {"update_id": 2**70},  # beyond any id Telegram gives (and the ledgers' integers)
        {"update_id": -3},
        {"hello": "world"},
        [1, 2, 3],
        b"{not json",
        b"",
    ]
    for body in ignored:
        response = post(bot_server, body)
        assert response.status_code == 200, (body, response.text)
    # A message after them is answered, and none of the ignored ones got anything.
    sentinel = Updates(chat_id=1061).text("/help")
    post(bot_server, sentinel)
    reply_to(fake, sentinel)
    time.sleep(0.5)
    assert messages_to(fake, 1060) == []
    assert messages_to(fake, -100_000 - 1060) == []


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", SECRET + "x", SECRET[:-1]])
def test_missing_or_wrong_secret_is_refused(
    bot_server: GunicornServer, fake: FakeTelegram, secret: str | None
) -> None:
    update = Updates(chat_id=1070).text("/help")
    response = post(bot_server, update, secret=secret)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    time.sleep(0.3)
    assert messages_to(fake, 1070) == []


def test_twenty_updates_at_once_are_all_answered(
    bot_server: GunicornServer, fake: FakeTelegram
) -> None:
    chats = range(1200, 1220)  # one each: a chat gets one message a second
    batch = [
        Updates(chat_id=chat).photo(fake.add_file(jpeg_bytes(640, 480, seed=100 + i))) if i % 2
        else Updates(chat_id=chat).text("/help")
        for i, chat in enumerate(chats)
    ]  # fmt: skip
    started = time.monotonic()
    with ThreadPoolExecutor(len(batch)) as pool:
        statuses = list(pool.map(lambda u: post(bot_server, u).status_code, batch))
    assert statuses == [200] * 20
    for update in batch:
        reply_to(fake, update, timeout=60)
    assert sum(len(messages_to(fake, chat)) for chat in chats) == 20
    print(f"20 concurrent updates answered in {time.monotonic() - started:.2f}s")
    # Each worker built its own Application on its own loop: one getMe per worker.
    ready = set(re.findall(r"telegram bot @\S+ ready in worker pid (\d+)", bot_server.logs()))
    assert len(ready) == 2, bot_server.logs()
    assert len(fake.calls("getMe")) == 2


def test_replies_are_counted_by_verdict_and_press_outcome(
    bot_server: GunicornServer, fake: FakeTelegram
) -> None:
    updates = Updates(chat_id=1106)
    reply, keys = answered_photo(bot_server, fake, updates, jpeg_bytes(seed=46))
    press(bot_server, fake, updates, reply, keys["❌ Wrong"])
    press(bot_server, fake, updates, reply, "fb:garbled")
    press(bot_server, fake, updates, reply, buttons(fake.message(reply))["Dingo"])
    body = requests.get(f"{bot_server.base_url}/metrics", timeout=10).text  # every worker's
    counted = dict(re.findall(r'^breedrecognizer_telegram_replies_total\{kind="(\w+)"\} (\S+)$',
                              body, re.MULTILINE))  # fmt: skip
    for kind in ("sure", "feedback_choices", "feedback_bad", "feedback_stored"):
        assert float(counted.get(kind, 0)) >= 1, (kind, counted)
    assert "breed" not in counted  # answers are counted by verdict


@pytest.mark.data
def test_real_dog_photos_get_the_right_breed(
    bot_server: GunicornServer, fake: FakeTelegram
) -> None:
    """Imagewoof val photos (caveat: ~96% of them are ImageNet-1k train photos)."""
    root = imagewoof_dir()
    if root is None:
        pytest.skip("Imagewoof data not found (../shared/data or BREED_DATA_DIR)")
    wanted = {"Golden retriever", "Old English sheepdog", "Border terrier"}
    first: dict[str, str] = {}
    with (root / "index.csv").open(newline="") as fh:
        for row in sorted(csv.DictReader(fh), key=lambda r: r["path"]):
            if row["split"] == "val" and row["breed"] in wanted:
                first.setdefault(row["breed"], row["path"])
    updates = Updates(chat_id=1090)
    sent = {}
    for breed, path in first.items():
        data = (root / path).read_bytes()
        update = updates.photo(fake.add_file(data), size=len(data))
        assert post(bot_server, update).status_code == 200
        sent[breed] = update
    for breed, update in sent.items():
        assert reply_to(fake, update).params["text"].startswith(f"My best guess: {breed} ")


# -- another breed, a wild canid, a cat: what the photo looks like -------------------------


@pytest.fixture(scope="module")
def shipped_bot_server(
    fake: FakeTelegram, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GunicornServer, Path]]:
    """The bot on the shipped artifact as served (its own open-set and looks_like rules),
    one worker, corrections stored in the folder it comes with."""
    store = tmp_path_factory.mktemp("feedback-shipped")
    env = {**fake.env(), "TELEGRAM_SECRET_TOKEN": SECRET, "WEB_CONCURRENCY": "1"}
    running = start_gunicorn({**env, "FEEDBACK_URI": str(store)})
    yield running, store
    running.stop()


def first_photo_looking_like(
    server: GunicornServer, folder: Path, kind: str, wnid: str | None = None
) -> bytes:
    """The first photo of ``folder`` the service says plainly looks like a ``kind`` (this
    ``wnid``, if given)."""
    if not folder.is_dir():
        pytest.skip(f"needs ../shared/data ({folder.name})")
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        files = {"image": (path.name, data)}
        answer = requests.post(f"{server.base_url}/predict", files=files, timeout=30).json()
        other = answer["looks_like"]
        if other and other["kind"] == kind and LooksLike(**other).plain:
            if wnid is not None and other["wnid"] != wnid:
                continue
            return data
    pytest.fail(f"no photo of {folder} is said to look like a {kind}")


@pytest.mark.data
def test_a_labrador_is_said_to_look_like_one_in_both_languages(
    shipped_bot_server: tuple[GunicornServer, Path], fake: FakeTelegram
) -> None:
    server, store = shipped_bot_server
    labradors = data_dir() / "ood" / "dogs" / "labrador"
    photo = first_photo_looking_like(server, labradors, "dog", "n02099712")
    english = Updates(chat_id=1301)
    reply, keys = answered_photo(server, fake, english, photo)
    said = reply.params["text"]
    assert re.match(
        r"(Not|Probably not) one of my 10 breeds — it looks like a Labrador retriever "
        r"\(\d+%\) 🐕\n\nOf my breeds, the nearest would be:\n1\. ",
        said,
    ), said
    assert_ranking(said)
    russian = Updates(chat_id=1302, language_code="ru")
    reply_ru, _ = answered_photo(server, fake, russian, photo)
    assert re.match(
        r"(Это|Скорее всего, это) не одна из моих 10 пород — похоже, это лабрадор-ретривер "
        r"\(\d+%\) 🐕\n\nИз моих пород ближе всего:\n1\. ",
        reply_ru.params["text"],
    ), reply_ru.params["text"]
    # "Right" confirms what the answer named: the Labrador, stored with its wnid.
    _, answer_id, action, named = keys["✅ Right"].split(":")
    assert (action, named) == ("ok", "n02099712")
    assert (
        press(server, fake, english, reply, keys["✅ Right"]).params["text"].startswith("Thanks!")
    )
    [record] = records(store, answer_id)
    assert record["label"] == "n02099712"
    assert record["answer"]["looks_like"]["wnid"] == "n02099712"
    # "Wrong" still offers the ten and "none of these": no long list in a chat.
    reply2, keys2 = answered_photo(server, fake, Updates(chat_id=1303), photo)
    press(server, fake, Updates(chat_id=1303), reply2, keys2["❌ Wrong"])
    choices = buttons(fake.message(reply2))
    assert list(choices) == [*(c.name for c in IMAGEWOOF_CLASSES), "None of these"]


@pytest.mark.data
def test_a_cat_is_said_to_be_a_cat_in_both_languages(
    shipped_bot_server: tuple[GunicornServer, Path], fake: FakeTelegram
) -> None:
    server, _ = shipped_bot_server
    photo = first_photo_looking_like(server, data_dir() / "ood" / "cats" / "Siamese", "cat")
    reply, _ = answered_photo(server, fake, Updates(chat_id=1304), photo)
    assert re.fullmatch(
        r"It's a cat — I recognise dogs 🐱 \(\w[\w ]+ cat, I'd say: \d+%\)", reply.params["text"]
    ), reply.params["text"]
    reply_ru, _ = answered_photo(server, fake, Updates(chat_id=1305, language_code="ru"), photo)
    assert re.fullmatch(
        r"Это кошка, а я узнаю собак 🐱 \(похоже, [а-яё ]+ кошка: \d+%\)",
        reply_ru.params["text"],
    ), reply_ru.params["text"]


def test_workers_shut_down_cleanly(bot_server: GunicornServer) -> None:
    """Last on purpose: stops the server and checks the loop/Application ended cleanly."""
    assert bot_server.stop() == 0
    logs = bot_server.logs()
    assert len(re.findall(r"telegram bot stopped in worker pid \d+", logs)) == 2, logs
    for bad in ("Event loop is closed", "never awaited", "Task was destroyed", "Traceback"):
        assert bad not in logs
