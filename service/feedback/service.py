"""``Feedback``: remember the photo behind an answer, and store a correction of it.

The API's ``POST /feedback`` and the bot's buttons both call ``submit`` (the API ``correct``,
which also says whether a label was replaced) with the ``id`` every answer has
(service/answer.py), whether or not feedback is on.

The photo is made private (upright, at most ``FEEDBACK_PHOTO_SIDE`` px, no metadata:
service/feedback/photo.py) when it is kept, not when a correction comes: few answers get one,
but keeping the raw upload would put its GPS position and phone model in the recent store (in
Redis, a shared service) for up to ``FEEDBACK_KEEP_S``, and a raw phone photo is ~4 MB where
Redis has ~12 MB for all of them. The copy is made from the photo the model already decoded
(no second decode): a resize and a small JPEG encode per answer (docs/feedback.md).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from model.looks_like import OTHER_CLASSES
from service.answer import is_answer_id
from service.feedback.photo import private_copy
from service.feedback.recent import (
    FolderRecentAnswers,
    RecentAnswer,
    RecentAnswers,
    RecentUnavailableError,
    RedisRecentAnswers,
)
from service.feedback.store import NONE_LABEL, FeedbackRecord, FeedbackStore, Saved, open_store
from service.metrics import observe_feedback
from service.settings import FeedbackSettings

log = logging.getLogger(__name__)


class UnknownAnswerError(LookupError):
    """No recent answer has this id (never given, or its photo is no longer kept)."""


class BadLabelError(ValueError):
    """The label is no class the service can name (a wnid) and not "none"."""


def feedback_labels(wnids: list[str]) -> frozenset[str]:
    """What a correction may say: one of the breeds ``wnids``, any other dog breed, wild canid
    or cat an answer may name (``looks_like``: model/looks_like.py), or "none"."""
    return frozenset([*wnids, *(c.wnid for c in OTHER_CLASSES), NONE_LABEL])


class Feedback:
    """The recent answers and the store of corrections, for the labels ``feedback_labels``."""

    def __init__(
        self,
        store: FeedbackStore,
        recent: RecentAnswers,
        wnids: list[str],
        photo_side: int = 1024,
    ) -> None:
        self.store, self.recent = store, recent
        self.labels = feedback_labels(wnids)
        self.photo_side = photo_side

    def keep(self, answer: dict[str, Any], photo: Image.Image) -> bool:
        """Keep the private copy of the photo for a correction; False when it could not be
        kept, which costs that correction, never the answer: this never raises."""
        answer_id = answer.get("id")
        try:
            copy = private_copy(photo, self.photo_side)
            if self.recent.put(answer["id"], RecentAnswer(copy, answer)):
                return True
            log.warning("answer %s: photo not kept for feedback: over the byte bound", answer_id)
        except RecentUnavailableError as exc:
            log.warning("answer %s: photo not kept for feedback: %s", answer_id, exc)
        except Exception:  # a kept photo is worth less than the answer it would cost
            log.exception("answer %s: photo not kept for feedback", answer_id)
        return False

    def correct(self, answer_id: str, label: str) -> Saved:
        """Store the answer's label, replacing an earlier one; ``Saved.SAME`` when it was the
        answer's label already (nothing written).

        Raises BadLabelError, UnknownAnswerError, or the stores' unavailable errors.
        """
        if label not in self.labels:
            raise BadLabelError(label)
        if not is_answer_id(answer_id):
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
        saved = self.store.save(record, entry.photo)
        if saved is not Saved.SAME:
            observe_feedback(record.correct, label)
            log.info("feedback %s: answer %s is %s (%s)", saved, answer_id, label, record.correct)
        return saved

    def submit(self, answer_id: str, label: str) -> bool:
        """``correct``, as a yes/no: False when this label was the answer's already."""
        return self.correct(answer_id, label) is not Saved.SAME


def build_feedback(
    settings: FeedbackSettings,
    redis_url: str | None,
    wnids: list[str],
) -> Feedback | None:
    """The feedback of these settings, or None when ``FEEDBACK_URI`` is unset (off)."""
    if not settings.uri:
        return None
    recent: RecentAnswers
    if redis_url:
        recent = RedisRecentAnswers(
            redis_url, settings.keep_s, settings.keep_photos, settings.keep_redis_bytes
        )
    else:
        folder = settings.recent_dir or Path(tempfile.mkdtemp(prefix="breedrecognizer-recent-"))
        recent = FolderRecentAnswers(
            folder, settings.keep_s, settings.keep_photos, settings.keep_bytes
        )
    return Feedback(open_store(settings.uri), recent, wnids, settings.photo_side)
