"""The bot on the web app's event loop, in python-telegram-bot's custom-webhook pattern.

One ``Application`` per worker, built with ``updater(None)``: updates come from the webhook
route, not from polling. It runs on the event loop the web server already runs (uvicorn's),
so there is no thread or loop of its own; it starts on the first update (the Bot API may be
unreachable when the worker boots) and stops at the worker's shutdown.

An update is answered before it is acknowledged: ``answer`` returns only once the reply is
sent, so the webhook's 200 always follows an answer and a replica killed at any moment leaves
Telegram something to deliver again. The ``Ledger`` makes redelivery harmless: one replica at
a time holds a lease on an update, and an answered one is never answered twice. Sends are
paced by ``Pacer`` (service/telegram_bot/limits.py) and bounded by the update's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from telegram import Update
from telegram.error import InvalidToken
from telegram.ext import Application, ApplicationBuilder, Defaults

from model.predictor import Predictor
from service.feedback.service import Feedback
from service.settings import TelegramSettings
from service.telegram_bot.handlers import BreedBot, Deferred, handling, off_loop
from service.telegram_bot.ledger import Claim, Ledger, LedgerUnavailableError
from service.telegram_bot.limits import Pacer, Slots

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO, and Bot API URLs contain the bot token.
for _noisy in ("httpx", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

# A lease outlives the wait for the answer, so the lease holder is the only one answering.
LEASE_MARGIN_S = 5.0
MAX_UPDATE_ID = 2**63  # the ledgers store ids as signed 64-bit integers (SQLite INTEGER)


class BotUnavailableError(RuntimeError):
    """No answer can be promised now (Bot API or shared store unreachable, update busy,
    flood control); ``retry_after_s`` when the Bot API said how long to wait."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class BotRuntime:
    """One per worker: the Application, its handlers, and the model's executor."""

    def __init__(
        self,
        config: TelegramSettings,
        predictor: Predictor,
        ledger: Ledger,
        slots: Slots,
        feedback: Feedback | None = None,
        model: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.executor = ThreadPoolExecutor(
            max_workers=config.model_workers, thread_name_prefix="telegram-model"
        )
        self.bot = BreedBot(predictor, config, self.executor, feedback, model, ledger, slots)
        self.application = self._build_application(slots)
        self.bot.register(self.application)
        self._starting = asyncio.Lock()
        self._updates = asyncio.Semaphore(config.concurrent_updates)
        self._answering: set[asyncio.Future[Deferred | None]] = set()

    def _build_application(self, slots: Slots) -> Application:
        config = self.config
        pacer = Pacer(
            slots,
            config.chat_interval_s,
            config.group_interval_s,
            config.messages_per_s,
            default_wait_s=config.answer_timeout_s,
        )
        return (
            ApplicationBuilder()
            .token(config.token)
            .base_url(config.api_base_url)
            .base_file_url(config.file_base_url)
            .updater(None)
            .defaults(Defaults(allow_sending_without_reply=True))
            .rate_limiter(pacer)
            # Sends set their own read timeout (TELEGRAM_SEND_TIMEOUT_S, cut to the deadline).
            .connect_timeout(5.0)
            .pool_timeout(5.0)
            .connection_pool_size(config.concurrent_updates * 2)
            .build()
        )

    async def answer(self, data: dict[str, Any]) -> None:
        """Answer one update (raw JSON), or return at once if it was answered before.

        A body that is not an update is ignored. Raises BotUnavailableError when the update
        is not answered now: the webhook then answers 503 and Telegram delivers it again.
        """
        await self._start()
        try:
            update = Update.de_json(data, self.application.bot)
        except Exception as exc:  # any shape PTB cannot read is not worth a retry
            log.debug("ignoring a body that is not a Telegram update: %r", exc)
            return
        update_id = update.update_id
        if not 0 <= update_id < MAX_UPDATE_ID:  # Telegram's ids are positive 64-bit integers
            log.debug("ignoring an update id no Telegram update has: %s", update_id)
            return
        lease_s = self.config.answer_timeout_s + LEASE_MARGIN_S
        try:
            claim = await off_loop(partial(self.ledger.claim, update_id, lease_s))
        except LedgerUnavailableError as exc:
            raise BotUnavailableError(f"cannot record answers: {exc}") from exc
        if claim is Claim.ANSWERED:
            log.info("telegram update %s delivered again; already answered", update_id)
            return
        if claim is Claim.BUSY:
            raise BotUnavailableError(f"update {update_id} is being answered elsewhere")
        deadline = time.monotonic() + self.config.answer_timeout_s
        task = asyncio.ensure_future(self._process(update, deadline))
        self._answering.add(task)  # held until done, also after the webhook call gave up
        task.add_done_callback(self._answering.discard)
        try:
            async with asyncio.timeout(self.config.answer_timeout_s):
                deferred = await asyncio.shield(task)
        except TimeoutError:
            # Still running (its sends end by the deadline), and it records its answer when
            # done; meanwhile its lease keeps every other delivery of it from being answered.
            raise BotUnavailableError(f"update {update_id} not answered in time") from None
        if deferred is not None:
            raise BotUnavailableError(
                f"update {update_id} not answered now: {deferred.reason}", deferred.retry_after_s
            )

    async def _process(self, update: Update, deadline: float) -> Deferred | None:
        """Run the handlers under the update's deadline, then settle its lease; what is left
        to a later delivery (None: the user got the reply, or the chat refused it)."""
        async with self._updates:
            with handling(deadline) as outcome:
                await self.application.process_update(update)
        settle = self.ledger.answered if outcome.deferred is None else self.ledger.release
        try:
            await off_loop(partial(settle, update.update_id))
        except LedgerUnavailableError as exc:  # answered all the same: acknowledge it
            log.warning("telegram update %s answered but not recorded: %s", update.update_id, exc)
        return outcome.deferred

    async def _start(self) -> None:
        """Initialise and start the Application once (``getMe``); retried on the next update
        when the Bot API cannot be reached."""
        async with self._starting:
            if self.application.running:
                return
            try:
                async with asyncio.timeout(self.config.startup_timeout_s):
                    await self.application.initialize()
                    await self.application.start()
            except Exception as exc:
                await self.application.shutdown()
                why = str(exc) or f"no answer within {self.config.startup_timeout_s:g}s"
                if isinstance(exc, InvalidToken):  # its message quotes the token
                    why = "the Bot API rejected TELEGRAM_TOKEN"
                log.error("telegram bot could not start (will retry on the next update): %s", why)
                raise BotUnavailableError(why) from exc
            log.info(
                "telegram bot @%s ready in worker pid %d (up to %d updates at a time)",
                self.application.bot.username,
                os.getpid(),
                self.config.concurrent_updates,
            )

    async def stop(self) -> None:
        """Stop the Application at the worker's shutdown; safe when it never started."""
        async with self._starting:
            if self.application.running:
                await self.application.stop()
                await self.application.shutdown()
                log.info("telegram bot stopped in worker pid %d", os.getpid())
        self.executor.shutdown(wait=False, cancel_futures=True)
