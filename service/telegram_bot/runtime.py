"""The bridge between sync Flask/gunicorn and async python-telegram-bot.

Each worker process owns one asyncio loop running forever in a daemon thread and one
``Application`` (built with ``updater(None)``: updates come from our Flask route, not from
polling), initialised and started once on that loop. Everything starts lazily on the first
update, in the worker, so nothing with threads or sockets is created before gunicorn forks.

An update is answered before it is acknowledged: ``answer`` runs the update through the
application and returns only once the reply is sent, so the webhook's 200 always follows an
answer and a replica killed at any moment leaves Telegram something to deliver again. The
``Ledger`` makes redelivery harmless: one replica at a time holds a lease on an update, and an
answered one is never answered twice. Sends are paced by ``Pacer`` (service/telegram_bot/
limits.py) and bounded by the update's deadline (``answer_deadline``): a send never outlives
the lease that keeps other replicas from answering the same update.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

from telegram import Update
from telegram.error import InvalidToken
from telegram.ext import Application, ApplicationBuilder, Defaults

from model.predictor import Predictor
from service.feedback.service import Feedback
from service.settings import TelegramSettings
from service.telegram_bot.handlers import BreedBot
from service.telegram_bot.ledger import Claim, Ledger, LedgerUnavailableError
from service.telegram_bot.limits import Pacer, Slots, answer_deadline

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO, and Bot API URLs contain the bot token.
for _noisy in ("httpx", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

# A lease outlives the wait for the answer, so the lease holder is the only one answering.
LEASE_MARGIN_S = 5.0


class BotUnavailableError(RuntimeError):
    """No answer can be promised now (Bot API or shared store unreachable, update busy,
    flood control); ``retry_after_s`` when the Bot API said how long to wait."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


MAX_UPDATE_ID = 2**63  # the ledgers store ids as signed 64-bit integers (SQLite INTEGER)


class BotRuntime:
    """One per process: the loop thread, the Application, and the model-call executor."""

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
        self.slots = slots
        self._predictor = predictor
        self._feedback, self._model = feedback, model  # the buttons' store, the answers' model
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._application: Application | None = None
        self._bot: BreedBot | None = None

    def answer(self, data: dict[str, Any]) -> None:
        """Answer one update (raw JSON), or return at once if it was answered before.

        A body that is not an update is ignored. Raises BotUnavailableError when the update
        is not answered now: the webhook then answers 503 and Telegram delivers it again.
        """
        loop, application = self._ensure_started()
        try:
            update = Update.de_json(data, application.bot)
        except Exception as exc:  # any shape PTB cannot read is not worth a retry
            log.debug("ignoring a body that is not a Telegram update: %r", exc)
            return
        update_id = update.update_id
        if not 0 <= update_id < MAX_UPDATE_ID:  # Telegram's ids are positive 64-bit integers
            log.debug("ignoring an update id no Telegram update has: %s", update_id)
            return
        lease_s = self.config.answer_timeout_s + LEASE_MARGIN_S
        try:
            claim = self.ledger.claim(update_id, lease_s)
        except LedgerUnavailableError as exc:
            raise BotUnavailableError(f"cannot record answers: {exc}") from exc
        if claim is Claim.ANSWERED:
            log.info("telegram update %s delivered again; already answered", update_id)
            return
        if claim is Claim.BUSY:
            raise BotUnavailableError(f"update {update_id} is being answered elsewhere")
        deadline = time.monotonic() + self.config.answer_timeout_s
        coroutine = self._process(application, update, deadline)
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            deferred = future.result(self.config.answer_timeout_s)
        except FutureTimeoutError:
            # Still running (its sends end by the deadline), and it records its answer when
            # done; meanwhile its lease keeps every other delivery of it from being answered.
            raise BotUnavailableError(f"update {update_id} not answered in time") from None
        if deferred is not None:
            raise BotUnavailableError(
                f"update {update_id} not answered now: {deferred.reason}", deferred.retry_after_s
            )

    async def _process(self, application: Application, update: Update, deadline: float):
        """Run the handlers with the update's deadline, then settle its lease; what is left
        to a later delivery (None: the user got the reply, or the chat refused it)."""
        answer_deadline.set(deadline)  # this task's own context: seen by its sends
        await application.process_update(update)
        deferred = self._bot.deferred(update.update_id) if self._bot is not None else None
        settle = self.ledger.answered if deferred is None else self.ledger.release
        try:
            await asyncio.get_running_loop().run_in_executor(None, settle, update.update_id)
        except LedgerUnavailableError as exc:  # answered all the same: acknowledge it
            log.warning("telegram update %s answered but not recorded: %s", update.update_id, exc)
        return deferred

    def _ensure_started(self) -> tuple[asyncio.AbstractEventLoop, Application]:
        with self._lock:
            if self._pid == os.getpid() and self._application is not None:
                return self._loop, self._application
            if self._pid != os.getpid():
                # A fresh process (e.g. a forked gunicorn worker): inherited state is useless.
                self._loop = self._thread = self._application = self._executor = None
                self._pid = os.getpid()
            if self._loop is None:
                self._start_loop()
            application = self._build_application()
            future = asyncio.run_coroutine_threadsafe(
                self._start_application(application), self._loop
            )
            try:
                future.result(self.config.startup_timeout_s)
            except Exception as exc:
                future.cancel()
                why = str(exc) or f"no answer within {self.config.startup_timeout_s:g}s"
                if isinstance(exc, InvalidToken):  # its message quotes the token
                    why = "the Bot API rejected TELEGRAM_TOKEN"
                log.error("telegram bot could not start (will retry on the next update): %s", why)
                raise BotUnavailableError(why) from exc
            self._application = application
            log.info(
                "telegram bot @%s ready in worker pid %d (up to %d updates at a time)",
                application.bot.username,
                self._pid,
                self.config.concurrent_updates,
            )
            return self._loop, application

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"telegram-loop-{self._pid}", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread
        self._executor = ThreadPoolExecutor(
            max_workers=self.config.model_workers, thread_name_prefix="telegram-model"
        )
        atexit.register(self.close)

    def _build_application(self) -> Application:
        application = (
            ApplicationBuilder()
            .token(self.config.token)
            .base_url(self.config.api_base_url)
            .base_file_url(self.config.file_base_url)
            .updater(None)
            .defaults(Defaults(allow_sending_without_reply=True))
            .rate_limiter(
                Pacer(
                    self.slots,
                    self.config.chat_interval_s,
                    self.config.group_interval_s,
                    self.config.messages_per_s,
                    default_wait_s=self.config.answer_timeout_s,
                )
            )
            # Sends set their own read timeout (TELEGRAM_SEND_TIMEOUT_S, cut to the deadline).
            .connect_timeout(5.0)
            .pool_timeout(5.0)
            .connection_pool_size(self.config.concurrent_updates * 2)
            .build()
        )
        self._bot = BreedBot(
            self._predictor,
            self.config,
            self._executor,
            self._feedback,
            self._model,
            self.ledger,
            self.slots,
        )
        self._bot.register(application)
        return application

    @staticmethod
    async def _start_application(application: Application) -> None:
        try:
            await application.initialize()
            await application.start()
        except BaseException:
            await application.shutdown()
            raise

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the application, then the loop; safe to repeat."""
        with self._lock:
            loop, application = self._loop, self._application
            if loop is None or self._pid != os.getpid():
                return
            self._loop = self._application = None
        if application is not None:
            future = asyncio.run_coroutine_threadsafe(_stop(application), loop)
            try:
                future.result(timeout_s)
            except Exception as exc:
                log.warning("telegram bot did not stop cleanly: %r", exc)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout_s)
        if not loop.is_running():
            loop.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("telegram bot stopped in worker pid %d", os.getpid())


async def _stop(application: Application) -> None:
    if application.running:
        await application.stop()
    await application.shutdown()
