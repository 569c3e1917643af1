"""``Feedback``: remember the photo behind an answer, and store a correction of it.

The API's ``POST /feedback`` and the bot's buttons both call ``submit``; an answer's ``id``
comes from ``new_answer_id`` whether or not feedback is on, so every answer has one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.predictor import Prediction
from service.feedback.recent import (
    FolderRecentAnswers,
    RecentAnswer,
    RecentAnswers,
    RecentUnavailableError,
    RedisRecentAnswers,
)
from service.feedback.store import NONE_LABEL, FeedbackRecord, FeedbackStore, open_store
from service.http.metrics import observe_feedback
from service.settings import FeedbackSettings

log = logging.getLogger(__name__)


class UnknownAnswerError(LookupError):
    """No recent answer has this id (never given, or its photo is no longer kept)."""


class BadLabelError(ValueError):
    """The label is neither one of the breeds' wnids nor "none"."""


# What new_answer_id makes: anything else (a path, say) is no answer id.
_ANSWER_ID = re.compile(r"[A-Za-z0-9_-]{16}")


def new_answer_id() -> str:
    """16 URL-safe characters: unguessable, and short enough for Telegram's callback data."""
    return secrets.token_urlsafe(12)


def answer_of(answer_id: str, prediction: Prediction, model: dict[str, str]) -> dict[str, Any]:
    """The answer as /predict and the bot give it, and as a correction's record keeps it."""
    return {"id": answer_id, **prediction.to_dict(), "model": model}


class Feedback:
    """The recent answers and the store of corrections, for the labels ``wnids`` + "none"."""

    def __init__(self, store: FeedbackStore, recent: RecentAnswers, wnids: list[str]) -> None:
        self.store, self.recent = store, recent
        self.labels = frozenset([*wnids, NONE_LABEL])

    def keep(self, answer: dict[str, Any], photo: bytes) -> bool:
        """Keep the photo for a correction; False when it could not be kept, which costs that
        correction, never the answer."""
        try:
            self.recent.put(answer["id"], RecentAnswer(photo, answer))
        except RecentUnavailableError as exc:
            log.warning("answer %s: photo not kept for feedback: %s", answer["id"], exc)
            return False
        return True

    def submit(self, answer_id: str, label: str) -> bool:
        """Store the correction; False when this (answer, label) was stored before.

        Raises BadLabelError, UnknownAnswerError, or the stores' unavailable errors.
        """
        if label not in self.labels:
            raise BadLabelError(label)
        if not _ANSWER_ID.fullmatch(answer_id):
            raise UnknownAnswerError(answer_id)
        entry = self.recent.get(answer_id)
        if entry is None:
            raise UnknownAnswerError(answer_id)
        record = FeedbackRecord(
            answer_id=answer_id,
            photo_sha256=hashlib.sha256(entry.photo).hexdigest(),
            label=label,
            answer=entry.answer,
            received_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        stored = self.store.save(record, entry.photo)
        if stored:
            observe_feedback(record.correct, label)
            log.info("feedback stored: answer %s is %s (%s)", answer_id, label, record.correct)
        return stored


def build_feedback(
    settings: FeedbackSettings, redis_url: str | None, wnids: list[str]
) -> Feedback | None:
    """The feedback of these settings, or None when ``FEEDBACK_URI`` is unset (off)."""
    if not settings.uri:
        return None
    recent: RecentAnswers
    if redis_url:
        recent = RedisRecentAnswers(redis_url, settings.keep_s, settings.keep_photos)
    else:
        folder = settings.recent_dir or Path(tempfile.mkdtemp(prefix="breedrecognizer-recent-"))
        recent = FolderRecentAnswers(
            folder, settings.keep_s, settings.keep_photos, settings.keep_bytes
        )
    return Feedback(open_store(settings.uri), recent, wnids)
