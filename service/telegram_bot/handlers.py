"""What the bot does with each kind of message and button press, as python-telegram-bot
handlers.

Every handler answers the user, also when the answer cannot be made (download, decoding,
model): the failure is logged and the user gets an apology. Sending is another matter
(``_send``, docs/telegram.md): the Bot API's answer decides. Flood control (``RetryAfter``) the
pacer could not wait out, and errors that outlast the retries, defer the update (the reply
made is kept, and the webhook asks Telegram to deliver it again); a chat that refuses
(``Forbidden``, ``BadRequest``) is final; a send that timed out may have arrived and is never
repeated. An apology never stands in for an answer that could not be sent. With feedback on
(``FEEDBACK_URI``) each answer to a photo carries right / wrong buttons
(service/telegram_bot/buttons.py); a press stores the user's label through
``Feedback.submit``, which keeps no trace of who pressed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import httpx
from PIL import Image
from prometheus_client import Counter
from telegram import InlineKeyboardMarkup, Message, PhotoSize, Update
from telegram.constants import ChatAction
from telegram.error import (
    BadRequest,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from model.predictor import Prediction, Predictor
from model.preprocessing import ImageDecodeError
from service.answer import answer_of, new_answer_id
from service.feedback.recent import RecentUnavailableError
from service.feedback.service import BadLabelError, Feedback, UnknownAnswerError
from service.feedback.store import FeedbackStoreError
from service.metrics import observe_prediction
from service.settings import TelegramSettings
from service.telegram_bot.buttons import (
    answer_keyboard,
    breeds_keyboard,
    is_feedback,
    named_label,
    parse_press,
)
from service.telegram_bot.ledger import Ledger, LedgerUnavailableError
from service.telegram_bot.limits import Slots, answer_deadline, retry_after_s, time_left
from service.telegram_bot.texts import (
    help_text,
    image_problem,
    language_for,
    prediction_text,
    text,
    thanked,
)

log = logging.getLogger(__name__)

REPLIES = Counter(
    "breedrecognizer_telegram_replies",
    "Bot answers by kind (photo verdicts sure, unsure, unknown; help, hint_*, too_large, "
    "bad_image, download_failed, failed; callback_query; feedback button outcomes feedback_*)",
    ["kind"],
)
SEND_PROBLEMS = Counter(
    "breedrecognizer_telegram_send_problems",
    "Bot API answers to the bot's messages other than ok, by what they led to: refused (the "
    "chat blocked the bot or is gone: final), flood (429 not waited out: delivered again "
    "later), retried (5xx or unreachable, tried again), gave_up (still failing: delivered "
    "again later), maybe_sent (timed out: never sent twice)",
    ["problem"],
)
PHOTO_WINDOW_S = 60.0  # TELEGRAM_PHOTOS_PER_MINUTE counts photos in windows this long
RETRY_PAUSE_S = 0.5  # the first back-off before a failed send is tried again; then doubled
Result = TypeVar("Result")


@dataclass(frozen=True)
class Deferred:
    """An update not answered now: Telegram should deliver it again (after ``retry_after_s``
    when the Bot API said so)."""

    reason: str
    retry_after_s: float | None = None


@dataclass
class Outcome:
    """What one update's handling left to a later delivery (None: settled)."""

    deferred: Deferred | None = None


_outcome: ContextVar[Outcome | None] = ContextVar("telegram_outcome", default=None)


@contextmanager
def handling(deadline: float) -> Iterator[Outcome]:
    """The handling of one update, in its own task: the deadline its sends respect, and the
    outcome its handlers fill in."""
    outcome = Outcome()
    deadline_token, outcome_token = answer_deadline.set(deadline), _outcome.set(outcome)
    try:
        yield outcome
    finally:
        answer_deadline.reset(deadline_token)
        _outcome.reset(outcome_token)


def defer(deferred: Deferred) -> None:
    """Ask for the update being handled to be delivered again."""
    outcome = _outcome.get()
    if outcome is not None:
        outcome.deferred = deferred


# Only new messages and button presses: edited messages and channel posts are ignored on
# purpose. The webhook command asks Telegram for just these update types (allowed_updates).
NEW_MESSAGE = filters.UpdateType.MESSAGE
ALLOWED_UPDATES = ("message", "callback_query")

# What a feedback press answers (answerCallbackQuery), by outcome (its REPLIES kind).
PRESS_ANSWERS = {
    "feedback_stored": "thanks",
    "feedback_repeated": "thanks",  # the same label for the same answer again: still thanks
    "feedback_choices": "which_breed",
    "feedback_stale": "feedback_stale",
    "feedback_bad": "feedback_bad",
    "feedback_unavailable": "feedback_unavailable",
    "feedback_off": "feedback_off",
}


def pick_photo_size(sizes: tuple[PhotoSize, ...], max_bytes: int) -> PhotoSize | None:
    """The largest size Telegram will let us download (getFile refuses files over the limit)."""
    fitting = [s for s in sizes if s.file_size is None or s.file_size <= max_bytes]
    return max(fitting, key=lambda s: s.width * s.height, default=None)


class BreedBot:
    """The handlers, bound to one predictor and one executor for the blocking model calls."""

    def __init__(
        self,
        predictor: Predictor,
        config: TelegramSettings,
        executor: Executor,
        feedback: Feedback | None = None,
        model: dict[str, str] | None = None,
        ledger: Ledger | None = None,
        slots: Slots | None = None,
    ) -> None:
        self.predictor = predictor
        self.config = config
        self.executor = executor
        self.feedback = feedback  # None: feedback off, no buttons
        self.model = model or {}  # the model summary every remembered answer carries
        self.ledger = ledger  # keeps replies made but not delivered; None: none kept
        self.slots = slots  # counts each chat's photos; None: no per-chat budget

    def register(self, application: Application) -> None:
        # First of all: a reply made on an earlier delivery is sent as it was.
        application.add_handler(TypeHandler(Update, self.on_kept_reply), group=-1)
        application.add_handler(CommandHandler(["start", "help"], self.on_help, NEW_MESSAGE))
        application.add_handler(MessageHandler(NEW_MESSAGE & filters.PHOTO, self.on_photo))
        application.add_handler(
            MessageHandler(NEW_MESSAGE & filters.Document.IMAGE, self.on_image_document)
        )
        # Anything else in a private chat gets a hint; in groups the bot stays quiet.
        application.add_handler(
            MessageHandler(NEW_MESSAGE & filters.ChatType.PRIVATE, self.on_other)
        )
        application.add_handler(CallbackQueryHandler(self.on_callback_query))
        # Last in the group, so it only sees what no handler above took.
        application.add_handler(TypeHandler(object, self.on_ignored))
        application.add_error_handler(self.on_error)

    # -- handlers ---------------------------------------------------------------------

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        lang = _lang(update)
        classes = self.predictor.metadata.classes
        reply = help_text(classes, lang, self.predictor.top_k, self.feedback is not None)
        await self._send(update, "help", reply)

    async def on_photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        size = pick_photo_size(message.photo, self.config.max_file_bytes)
        if size is None:
            await self._too_large(update, _lang(update), message.photo[-1].file_size or 0)
            return
        await self._recognise(update, context, size.file_id, "photo")

    async def on_image_document(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        document = update.message.document
        if document.file_size and document.file_size > self.config.max_file_bytes:
            await self._too_large(update, _lang(update), document.file_size)
            return
        await self._recognise(update, context, document.file_id, "document")

    async def on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        lang = _lang(update)
        if message.sticker:
            kind, reply = "hint_sticker", text("hint_sticker", lang)
        elif message.document:
            mime = message.document.mime_type or "unknown"
            kind, reply = "hint_document", text("hint_document", lang, mime=mime)
        else:
            kind, reply = "hint_text", text("hint_text", lang)
        log.info("telegram update %s: not a photo, answered with %s", update.update_id, kind)
        await self._send(update, kind, reply)

    async def on_callback_query(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A button press: feedback buttons store a label; any other is just answered."""
        query = update.callback_query
        if not is_feedback(query.data):
            # Not a button of ours: answering just stops the client's spinner.
            log.debug("telegram update %s: callback query answered", update.update_id)
            await self._answer_press(update, "callback_query", None)
            return
        lang = _lang(update)
        press = parse_press(query.data)
        if self.feedback is None:
            kind = "feedback_off"
        elif press is None:
            log.info("telegram update %s: unreadable feedback button", update.update_id)
            kind = "feedback_bad"
        elif press.label is None:
            keyboard = breeds_keyboard(press.answer_id, self.predictor.metadata.classes, lang)
            await _edit(update, None, keyboard)
            kind = "feedback_choices"
        else:
            kind = await self._store(update, self.feedback, press.answer_id, press.label, lang)
        await self._answer_press(update, kind, text(PRESS_ANSWERS[kind], lang))

    async def on_ignored(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        kinds = (
            [k for k in update.to_dict() if k != "update_id"] if isinstance(update, Update) else []
        )
        log.debug("telegram update ignored: %s", ", ".join(kinds) or type(update).__name__)

    async def on_kept_reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A redelivered update whose reply was made before: send that, and nothing else (no
        second download or model call)."""
        if self.ledger is None or update.message is None:
            return
        kept = await off_loop(partial(self.ledger.kept_reply, update.update_id))
        if kept is None:
            return
        reply = json.loads(kept)
        markup = reply.get("reply_markup")
        keyboard = InlineKeyboardMarkup.de_json(markup, context.bot) if markup else None
        log.info("telegram update %s delivered again: sending the reply made", update.update_id)
        await self._send(update, reply["kind"], reply["text"], keyboard)
        raise ApplicationHandlerStop

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Last resort for anything a handler did not catch: log it; apologise for a failure
        of ours, never for the Bot API's (the update is delivered again instead)."""
        log.error("telegram update handling failed: %r", context.error, exc_info=context.error)
        if not isinstance(update, Update):
            return
        if isinstance(context.error, TelegramError | LedgerUnavailableError):
            defer(Deferred(f"{context.error}"))
        elif update.message:
            await self._send(update, "failed", text("failed", _lang(update)))
        elif update.callback_query:
            await self._answer_press(update, "failed", text("failed", _lang(update)))

    # -- the work -----------------------------------------------------------------------

    async def _recognise(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, file_id: str, kind: str
    ) -> None:
        """Download, predict, answer; a failure to make the answer ends in an apology."""
        message = update.message
        lang = _lang(update)
        if not await self._within_budget(update, lang):
            return
        started = time.perf_counter()
        await _chat_action(message)
        try:
            data = await self._retrying(partial(self._download, context, file_id))
        except TelegramError as exc:
            log.warning("telegram update %s: download failed: %s", update.update_id, exc)
            await self._send(update, "download_failed", text("download_failed", lang))
            return
        try:
            photo, prediction = await self._predict(data)
        except ImageDecodeError as exc:
            log.info("telegram update %s: unusable image: %s", update.update_id, exc.code)
            reason = image_problem(exc.code, lang)
            await self._send(update, "bad_image", text("bad_image", lang, reason=reason))
            return
        except Exception:
            log.exception("telegram update %s: model failed", update.update_id)
            await self._send(update, "failed", text("failed", lang))
            return
        answer_id = new_answer_id()
        keyboard = await self._offer_feedback(update, answer_id, photo, prediction, lang)
        del photo  # the decoded photo is not held while the answer is sent
        breeds = len(self.predictor.metadata.classes)
        reply = prediction_text(prediction, lang, breeds)
        await self._send(update, prediction.verdict, reply, keyboard)
        log.info(
            "telegram update %s: %s of %d bytes -> answer %s: %s %s (%.2f) in %.2fs",
            update.update_id,
            kind,
            len(data),
            answer_id,
            prediction.verdict,
            prediction.breed.name if prediction.breed else "-",
            prediction.top_k[0].confidence,
            time.perf_counter() - started,
        )

    @staticmethod
    async def _download(context: ContextTypes.DEFAULT_TYPE, file_id: str) -> bytes:
        tg_file = await context.bot.get_file(file_id)
        return bytes(await tg_file.download_as_bytearray(read_timeout=30))

    async def _within_budget(self, update: Update, lang: str) -> bool:
        """Whether this chat may have one more photo recognised this minute; the first photo
        over it is told so (once a minute, so a flood of photos makes no flood of replies)."""
        if self.slots is None:
            return True
        chat = f"photos:{update.effective_chat.id}"
        try:
            count = await off_loop(partial(self.slots.count, chat, PHOTO_WINDOW_S))
        except LedgerUnavailableError as exc:
            log.warning("telegram update %s: photo budget not counted: %s", update.update_id, exc)
            return True
        budget = self.config.photos_per_minute
        if count <= budget:
            return True
        log.info("telegram update %s: chat over %d photos a minute", update.update_id, budget)
        if count == budget + 1:
            await self._send(update, "over_budget", text("over_budget", lang, budget=budget))
        else:
            REPLIES.labels("over_budget_quiet").inc()
        return False

    async def _predict(self, data: bytes) -> tuple[Image.Image, Prediction]:
        """Run the CPU-bound decode + model call off the event loop; the decoded photo too
        (feedback keeps its private copy)."""

        def decode_and_predict() -> tuple[Image.Image, Prediction]:
            photo = self.predictor.decode(data)
            return photo, self.predictor.predict_image(photo, self.predictor.top_k)

        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        photo, prediction = await loop.run_in_executor(self.executor, decode_and_predict)
        observe_prediction(prediction, time.perf_counter() - started)
        return photo, prediction

    async def _offer_feedback(
        self,
        update: Update,
        answer_id: str,
        photo: Image.Image,
        prediction: Prediction,
        lang: str,
    ) -> InlineKeyboardMarkup | None:
        """Keep the photo for a correction and offer the buttons; None when feedback is off.

        Losing the photo costs only the buttons, never the answer.
        """
        if self.feedback is None:
            return None
        call = partial(self.feedback.keep, answer_of(answer_id, prediction, self.model), photo)
        try:
            kept = await asyncio.get_running_loop().run_in_executor(None, call)
        except Exception:  # a broken store must not cost the user the answer
            log.warning(
                "telegram update %s: photo not kept, no buttons", update.update_id, exc_info=True
            )
            return None
        return answer_keyboard(answer_id, named_label(prediction), lang) if kept else None

    async def _store(
        self, update: Update, feedback: Feedback, answer_id: str, label: str, lang: str
    ) -> str:
        """Store a pressed label; the outcome's REPLIES kind. Thanks in the message if stored."""
        query = update.callback_query
        call = partial(feedback.submit, answer_id, label)
        try:
            stored = await asyncio.get_running_loop().run_in_executor(None, call)
        except BadLabelError:
            log.info("telegram update %s: feedback label %r refused", update.update_id, label)
            return "feedback_bad"
        except UnknownAnswerError:
            log.info("telegram update %s: feedback for a stale answer", update.update_id)
            await _edit(update, None)  # the buttons cannot work any more
            return "feedback_stale"
        except (FeedbackStoreError, RecentUnavailableError) as exc:
            log.error("telegram update %s: feedback not stored: %s", update.update_id, exc)
            return "feedback_unavailable"
        message = query.message
        if isinstance(message, Message) and message.text and not thanked(message.text):
            thanks = f"{message.text}\n\n{text('thanks_line', lang)}"
            await _edit(update, thanks)  # without the keyboard
        else:
            await _edit(update, None)
        return "feedback_stored" if stored else "feedback_repeated"

    async def _answer_press(self, update: Update, kind: str, reply: str | None) -> None:
        """Answer a callback query: the press's reply, which the webhook waits for.

        Telegram refusing the answer (the query is too old, or answered already) needs no
        second delivery; an unreachable Bot API does, so the update counts as unanswered.
        """
        REPLIES.labels(kind).inc()
        try:
            await update.callback_query.answer(reply)
        except BadRequest as exc:
            log.info("telegram update %s: callback query not answerable: %s", update.update_id, exc)
        except TelegramError as exc:
            log.warning(
                "telegram update %s: callback query not answered: %s", update.update_id, exc
            )
            defer(Deferred(f"press not answered: {exc}"))

    async def _too_large(self, update: Update, lang: str, size: int) -> None:
        limit_mb = self.config.max_file_bytes / (1024 * 1024)
        reply = text("too_large", lang, size_mb=size / (1024 * 1024), limit_mb=limit_mb)
        await self._send(update, "too_large", reply)

    async def _send(
        self, update: Update, kind: str, reply: str, keyboard: InlineKeyboardMarkup | None = None
    ) -> None:
        """Reply to the user's message (so album photos each get their own), settling the
        update by what the Bot API answers; never raises a Bot API error."""
        uid = update.update_id
        send = partial(
            update.message.reply_text,
            reply,
            do_quote=True,
            reply_markup=keyboard,
            read_timeout=self.config.send_timeout_s,
        )
        try:
            await self._retrying(send)
        except RetryAfter as exc:  # the pacer could not wait it out before the deadline
            seconds = retry_after_s(exc)
            SEND_PROBLEMS.labels("flood").inc()
            log.info("telegram update %s: flood control for %gs, answer kept", uid, seconds)
            deferred = Deferred(f"flood control ({exc})", seconds)
            await self._defer(update, deferred, kind, reply, keyboard)
        except (Forbidden, BadRequest) as exc:  # blocked, chat gone, message too old: final
            SEND_PROBLEMS.labels("refused").inc()
            chat_id = update.effective_chat.id
            log.info("telegram update %s: chat %s refused the reply: %s", uid, chat_id, exc)
        except TimedOut as exc:
            if surely_unsent(exc):  # no connection to the Bot API, after every try
                await self._gave_up(update, exc, kind, reply, keyboard)
                return
            SEND_PROBLEMS.labels("maybe_sent").inc()
            log.info("telegram update %s: send timed out, may have arrived: %s", uid, exc)
        except TelegramError as exc:  # 5xx or unreachable, after every try
            await self._gave_up(update, exc, kind, reply, keyboard)
        else:
            REPLIES.labels(kind).inc()

    async def _gave_up(
        self,
        update: Update,
        error: TelegramError,
        kind: str,
        reply: str,
        keyboard: InlineKeyboardMarkup | None,
    ) -> None:
        SEND_PROBLEMS.labels("gave_up").inc()
        log.warning("telegram update %s: reply not sent, answer kept: %s", update.update_id, error)
        await self._defer(update, Deferred(f"reply not sent: {error}"), kind, reply, keyboard)

    async def _defer(
        self,
        update: Update,
        deferred: Deferred,
        kind: str,
        reply: str,
        keyboard: InlineKeyboardMarkup | None,
    ) -> None:
        """Ask for the update again, keeping the reply made for the next delivery."""
        defer(deferred)
        if self.ledger is None:
            return
        markup = keyboard.to_dict() if keyboard else None
        kept = {"kind": kind, "text": reply, "reply_markup": markup}
        try:
            await off_loop(partial(self.ledger.keep_reply, update.update_id, json.dumps(kept)))
        except LedgerUnavailableError as exc:  # the next delivery makes it again
            log.warning("telegram update %s: reply not kept: %s", update.update_id, exc)

    async def _retrying(self, call: Callable[[], Awaitable[Result]]) -> Result:
        """``call``, tried again after a 5xx, a connection failure or a timeout before
        anything was sent (with back-off, while the deadline allows); other errors at once."""
        pause = RETRY_PAUSE_S
        for attempt in range(1, self.config.send_attempts + 1):
            try:
                return await call()
            except BadRequest:
                raise
            except NetworkError as exc:
                left = time_left()
                last = attempt == self.config.send_attempts
                if last or not surely_unsent(exc) or (left is not None and left < pause + 1):
                    raise
                SEND_PROBLEMS.labels("retried").inc()
                log.info("Bot API call failed (%s); trying again in %gs", exc, pause)
                await asyncio.sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")  # the last attempt returns or raises


def surely_unsent(error: NetworkError) -> bool:
    """Whether a failed call surely did not reach Telegram: a timeout did only while
    connecting or waiting for a connection; any other error came with Telegram's answer."""
    if not isinstance(error, TimedOut):
        return True
    return isinstance(error.__cause__, httpx.ConnectTimeout | httpx.PoolTimeout)


async def off_loop(call: Callable[[], Result]) -> Result:
    """A blocking store call, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, call)


async def _edit(
    update: Update, new_text: str | None, keyboard: InlineKeyboardMarkup | None = None
) -> None:
    """Edit the pressed message: its text (the keyboard goes, unless given) or its keyboard.

    A failed edit is cosmetic and must not stop the answer to the press.
    """
    query = update.callback_query
    if query.inline_message_id is None and not isinstance(query.message, Message):
        log.debug("telegram update %s: pressed message inaccessible, not edited", update.update_id)
        return
    try:
        if new_text is None:
            await query.edit_message_reply_markup(keyboard)
        else:
            await query.edit_message_text(new_text, reply_markup=keyboard)
    except BadRequest as exc:  # e.g. "message is not modified" after a second press
        log.debug("telegram update %s: message not edited: %s", update.update_id, exc)
    except TelegramError as exc:
        log.warning("telegram update %s: message not edited: %s", update.update_id, exc)


def _lang(update: Update) -> str:
    user = update.effective_user
    return language_for(user.language_code if user else None)


async def _chat_action(message: Message) -> None:
    """Show "typing..." while we work; losing this cosmetic call must not stop the answer."""
    try:
        await message.reply_chat_action(ChatAction.TYPING)
    except TelegramError as exc:
        log.debug("sendChatAction failed: %s", exc)
