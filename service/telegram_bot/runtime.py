"""The bridge between sync Flask/gunicorn and async python-telegram-bot.

Each worker process owns one asyncio loop running forever in a daemon thread and one
``Application`` (built with ``updater(None)``: updates come from our Flask route, not from
polling), initialised and started once on that loop. Web requests hand updates over with
``call_soon_threadsafe`` to the application's ``update_queue``; PTB then processes up to
``concurrent_updates`` of them at a time. Everything starts lazily on the first update, in
the worker, so nothing with threads or sockets is created before gunicorn forks.

An update is acknowledged (200) as soon as it is queued, and Telegram never sends it again,
so the runtime must answer every queued update before the process exits: on SIGTERM the
worker calls ``start_draining`` (new updates are refused, so Telegram redelivers them to the
next process) and ``finish_draining`` (the queue is worked off while the model executor is
still up). Redelivered updates (same ``update_id``) are queued once (``SeenUpdates``).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from telegram import Update
from telegram.error import InvalidToken
from telegram.ext import Application, ApplicationBuilder, ContextTypes, Defaults, TypeHandler

from model.predictor import Predictor
from service.front import drain
from service.settings import TelegramSettings
from service.telegram_bot.handlers import BreedBot
from service.telegram_bot.seen import SeenUpdates

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO, and Bot API URLs contain the bot token.
for _noisy in ("httpx", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


# The handler group after the bot's own: it sees each update once the bot has answered it.
ANSWERED_GROUP = 1


class BotUnavailableError(RuntimeError):
    """The bot cannot take updates now (Bot API unreachable, or restarting); try again later."""


class BotRuntime:
    """One per process: the loop thread, the Application, and the model-call executor."""

    name = "telegram updates"

    def __init__(
        self,
        config: TelegramSettings,
        predictor: Predictor,
    ) -> None:
        self.config = config
        self._predictor = predictor
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._application: Application | None = None
        self._state_lock = threading.Lock()  # the four below; never held while waiting
        self._seen = SeenUpdates(config.seen_db)
        self._draining = False
        self._queued = 0  # updates handed to the Application ...
        self._answered = 0  # ... and those it has finished
        drain.register(self)

    def submit(self, data: dict[str, Any]) -> bool:
        """Queue one update (raw JSON) for processing; returns False if it is not an update.

        A redelivered update (an ``update_id`` already queued) is acknowledged, not queued.
        Raises BotUnavailableError when the bot cannot take updates right now.
        """
        if self._draining:  # checked again below; this one avoids starting a bot to refuse
            raise BotUnavailableError("the bot is restarting")
        loop, application = self._ensure_started()
        try:
            update = Update.de_json(data, application.bot)
        except Exception as exc:  # any shape PTB cannot read is not worth a retry
            log.debug("ignoring a body that is not a Telegram update: %r", exc)
            return False
        with self._state_lock:
            if self._draining:
                raise BotUnavailableError("the bot is restarting")
            if not self._seen.first_time(update.update_id):
                log.info("telegram update %s delivered again; already taken", update.update_id)
                return True
            self._queued += 1
            loop.call_soon_threadsafe(application.update_queue.put_nowait, update)
        return True

    def start_draining(self) -> None:
        with self._state_lock:
            self._draining = True

    def finish_draining(self, timeout_s: float) -> int:
        """Answer every queued update (within ``timeout_s``), then stop; returns how many."""
        with self._state_lock:
            pending = self._queued - self._answered
        started = time.monotonic()
        self.close(timeout_s)
        with self._state_lock:
            left = self._queued - self._answered
        log.info(
            "telegram bot drained %d queued updates in %.2f s%s",
            pending - left,
            time.monotonic() - started,
            f"; {left} NOT answered before the deadline" if left else "",
        )
        return pending - left

    async def _count_answered(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        with self._state_lock:
            self._answered += 1

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
            .concurrent_updates(self.config.concurrent_updates)
            .defaults(Defaults(allow_sending_without_reply=True))
            .build()
        )
        bot = BreedBot(self._predictor, self.config, self._executor)
        bot.register(application)
        application.add_handler(TypeHandler(object, self._count_answered), group=ANSWERED_GROUP)
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
        """Stop the application (finishing queued updates), then the loop; safe to repeat."""
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
