"""What the bot does with each kind of message and button press, as python-telegram-bot
handlers.

Every handler answers the user, also when something fails (download, decoding, model, the
feedback store): the failure is logged and the user gets an apology, so no update ever
becomes an error that Telegram would redeliver. With feedback on (``FEEDBACK_URI``) each
answer to a photo carries right / wrong buttons (service/telegram_bot/buttons.py); a press
stores the user's label through ``Feedback.submit``, which keeps no trace of who pressed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from functools import partial

from prometheus_client import Counter
from telegram import InlineKeyboardMarkup, Message, PhotoSize, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from model.predictor import Prediction, Predictor
from model.preprocessing import ImageDecodeError
from service.feedback.recent import RecentUnavailableError
from service.feedback.service import (
    BadLabelError,
    Feedback,
    UnknownAnswerError,
    answer_of,
    new_answer_id,
)
from service.feedback.store import FeedbackStoreError
from service.http.metrics import observe_prediction
from service.settings import TelegramSettings
from service.telegram_bot.buttons import (
    answer_keyboard,
    breeds_keyboard,
    is_feedback,
    named_label,
    parse_press,
)
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
    ) -> None:
        self.predictor = predictor
        self.config = config
        self.executor = executor
        self.feedback = feedback  # None: feedback off, no buttons
        self.model = model or {}  # the model summary every remembered answer carries
        # Updates whose user got nothing: no message sent, or the button press not answered.
        self._unreplied: set[int] = set()

    def replied(self, update_id: int) -> bool:
        """Whether handling ``update_id`` reached the user (asked once, after handling)."""
        if update_id in self._unreplied:
            self._unreplied.discard(update_id)
            return False
        return True

    def register(self, application: Application) -> None:
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
        await _reply(update.message, "help", reply)

    async def on_photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        size = pick_photo_size(message.photo, self.config.max_file_bytes)
        if size is None:
            await self._too_large(message, _lang(update), message.photo[-1].file_size or 0)
            return
        await self._recognise(update, context, size.file_id, "photo")

    async def on_image_document(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        document = update.message.document
        if document.file_size and document.file_size > self.config.max_file_bytes:
            await self._too_large(update.message, _lang(update), document.file_size)
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
        await _reply(message, kind, reply)

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

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Last resort for anything a handler did not catch: log it, apologise if possible."""
        log.error("telegram update handling failed: %r", context.error, exc_info=context.error)
        if isinstance(update, Update) and update.message:
            try:
                await _reply(update.message, "failed", text("failed", _lang(update)))
            except TelegramError as exc:
                log.warning("could not send the apology either: %s", exc)
                self._unreplied.add(update.update_id)
        elif isinstance(update, Update) and update.callback_query:
            await self._answer_press(update, "failed", text("failed", _lang(update)))

    # -- the work -----------------------------------------------------------------------

    async def _recognise(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, file_id: str, kind: str
    ) -> None:
        """Download, predict, answer; every failure ends in a message to the user."""
        message = update.message
        lang = _lang(update)
        started = time.perf_counter()
        await _chat_action(message)
        try:
            tg_file = await context.bot.get_file(file_id)
            data = bytes(await tg_file.download_as_bytearray(read_timeout=30))
        except TelegramError as exc:
            log.warning("telegram update %s: download failed: %s", update.update_id, exc)
            await _reply(message, "download_failed", text("download_failed", lang))
            return
        try:
            prediction = await self._predict(data)
        except ImageDecodeError as exc:
            log.info("telegram update %s: unusable image: %s", update.update_id, exc.code)
            reason = image_problem(exc.code, lang)
            await _reply(message, "bad_image", text("bad_image", lang, reason=reason))
            return
        except Exception:
            log.exception("telegram update %s: model failed", update.update_id)
            await _reply(message, "failed", text("failed", lang))
            return
        answer_id = new_answer_id()
        keyboard = await self._offer_feedback(update, answer_id, data, prediction, lang)
        breeds = len(self.predictor.metadata.classes)
        reply = prediction_text(prediction, lang, breeds)
        await _reply(message, prediction.verdict, reply, keyboard)
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

    async def _predict(self, data: bytes) -> Prediction:
        """Run the CPU-bound decode + model call off the event loop."""
        call = partial(self.predictor.predict_bytes, data, self.predictor.top_k)
        started = time.perf_counter()
        prediction = await asyncio.get_running_loop().run_in_executor(self.executor, call)
        observe_prediction(prediction, time.perf_counter() - started)
        return prediction

    async def _offer_feedback(
        self, update: Update, answer_id: str, photo: bytes, prediction: Prediction, lang: str
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
            self._unreplied.add(update.update_id)

    async def _too_large(self, message: Message, lang: str, size: int) -> None:
        limit_mb = self.config.max_file_bytes / (1024 * 1024)
        reply = text("too_large", lang, size_mb=size / (1024 * 1024), limit_mb=limit_mb)
        await _reply(message, "too_large", reply)


async def _reply(
    message: Message, kind: str, reply: str, keyboard: InlineKeyboardMarkup | None = None
) -> None:
    """Answer as a reply to the user's message (so album photos each get their own)."""
    REPLIES.labels(kind).inc()
    await message.reply_text(reply, do_quote=True, reply_markup=keyboard)


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
