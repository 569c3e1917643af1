"""What the bot does with each kind of message, as python-telegram-bot handlers.

Every handler answers the user, also when something fails (download, decoding, model):
the failure is logged and the user gets an apology, so no update ever becomes an error
that Telegram would redeliver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from functools import partial

from prometheus_client import Counter
from telegram import Message, PhotoSize, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError
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
from service.http.metrics import observe_prediction
from service.settings import TelegramSettings
from service.telegram_bot.texts import (
    help_text,
    image_problem,
    language_for,
    prediction_text,
    text,
)

log = logging.getLogger(__name__)

REPLIES = Counter(
    "breedrecognizer_telegram_replies",
    "Bot answers by kind (breed, unknown, help, hint, too_large, bad_image, download_failed...)",
    ["kind"],
)

# Only new messages: edited messages and channel posts are ignored on purpose. The webhook
# command asks Telegram for just these update types (allowed_updates).
NEW_MESSAGE = filters.UpdateType.MESSAGE
ALLOWED_UPDATES = ("message",)


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
    ) -> None:
        self.predictor = predictor
        self.config = config
        self.executor = executor
        self._unreplied: set[int] = set()  # updates whose user got no message at all

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
        await _reply(update.message, "help", help_text(classes, lang, self.predictor.top_k))

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
        # The bot sends no inline keyboards; answering just stops the client's spinner.
        log.debug("telegram update %s: callback query answered", update.update_id)
        REPLIES.labels("callback_query").inc()
        await update.callback_query.answer()

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
        breeds = len(self.predictor.metadata.classes)
        kind_answer = "breed" if prediction.known else "unknown"
        await _reply(message, kind_answer, prediction_text(prediction, lang, breeds))
        log.info(
            "telegram update %s: %s of %d bytes -> %s (%.2f) in %.2fs",
            update.update_id,
            kind,
            len(data),
            prediction.breed.name if prediction.breed else "unknown",
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

    async def _too_large(self, message: Message, lang: str, size: int) -> None:
        limit_mb = self.config.max_file_bytes / (1024 * 1024)
        reply = text("too_large", lang, size_mb=size / (1024 * 1024), limit_mb=limit_mb)
        await _reply(message, "too_large", reply)


async def _reply(message: Message, kind: str, reply: str) -> None:
    """Answer as a reply to the user's message (so album photos each get their own)."""
    REPLIES.labels(kind).inc()
    await message.reply_text(reply, do_quote=True)


def _lang(update: Update) -> str:
    user = update.effective_user
    return language_for(user.language_code if user else None)


async def _chat_action(message: Message) -> None:
    """Show "typing..." while we work; losing this cosmetic call must not stop the answer."""
    try:
        await message.reply_chat_action(ChatAction.TYPING)
    except TelegramError as exc:
        log.debug("sendChatAction failed: %s", exc)
