"""Where corrections go (``FEEDBACK_URI``): a local folder or ``s3://bucket/prefix``.

One layout in both: ``photos/<sha256>`` holds each photo's bytes once (the private copy:
upright, small, no metadata; service/feedback/photo.py), and ``records/<answer id>.json`` one
record per answer: the latest label sent for it replaces an earlier one, and the same label
sent again changes nothing. A record holds the model's answer and version, the user's label
and the time, and no user identity. Stores written before one record per answer may also hold
``records/<answer id>.<label>.json``; ``latest_per_answer`` reads both. The lab reads the
store through this module (``python -m training.feedback``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from model.artifact import atomic_write

log = logging.getLogger(__name__)

NONE_LABEL = "none"  # not one of the ten breeds, and no other class named


class FeedbackStoreError(RuntimeError):
    """The store cannot be read or written right now."""


class Saved(StrEnum):
    """What saving a correction did to its answer's record."""

    NEW = "new"  # the answer's first label
    REPLACED = "replaced"  # another label replaced the earlier one
    SAME = "same"  # this label was the answer's already: nothing written


@dataclass(frozen=True)
class FeedbackRecord:
    """One correction: what the model said of a photo and what the user says it is."""

    answer_id: str
    photo_sha256: str
    label: str  # the wnid of a class the service can name, or "none"
    answer: dict[str, Any]  # the answer as /predict gave it (breed, verdict, top_k, model)
    received_at: str  # ISO 8601, UTC

    @property
    def correct(self) -> bool:
        """Whether the user confirms what the answer named first: what it looks like (another
        breed, a wild canid, a cat), else its breed, else "not one of my breeds"."""
        named = self.answer.get("looks_like") or self.answer.get("breed")
        return (named["wnid"] if named else NONE_LABEL) == self.label

    @property
    def record_name(self) -> str:
        return f"{self.answer_id}.json"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeedbackRecord:
        return cls(**json.loads(text))


class FeedbackStore(Protocol):
    uri: str

    def save(self, record: FeedbackRecord, photo: bytes) -> Saved:
        """Store the record (and its photo once), replacing the answer's earlier label."""

    def records(self) -> Iterator[FeedbackRecord]: ...

    def photo(self, sha256: str) -> bytes: ...


class LocalFeedbackStore:
    """A folder; files are written whole (temporary file + rename), never half."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def save(self, record: FeedbackRecord, photo: bytes) -> Saved:
        path = self.root / "records" / record.record_name
        try:
            earlier = _label_of(path.read_bytes())
        except FileNotFoundError:
            earlier = None
        except OSError as exc:
            raise FeedbackStoreError(f"{self.uri}: {exc}") from exc
        if earlier == record.label:
            return Saved.SAME
        try:
            photo_path = self.root / "photos" / record.photo_sha256
            if not photo_path.exists():
                with atomic_write(photo_path) as tmp:
                    tmp.write_bytes(photo)
            # Written whole then renamed over the earlier record: a reader sees one or the other.
            with atomic_write(path) as tmp:
                tmp.write_text(record.to_json(), encoding="utf-8")
        except OSError as exc:
            raise FeedbackStoreError(f"{self.uri}: {exc}") from exc
        return Saved.NEW if earlier is None else Saved.REPLACED

    def records(self) -> Iterator[FeedbackRecord]:
        if not self.root.is_dir():
            raise FeedbackStoreError(f"{self.uri}: no such feedback store")
        for path in sorted((self.root / "records").glob("*.json")):
            yield FeedbackRecord.from_json(path.read_text(encoding="utf-8"))

    def photo(self, sha256: str) -> bytes:
        return (self.root / "photos" / sha256).read_bytes()


class S3FeedbackStore:
    """The same layout under ``s3://bucket/prefix`` (boto3 reads the ``AWS_*`` settings)."""

    def __init__(self, bucket: str, prefix: str, timeout_s: float = 10.0) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError)
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}"
        config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        self._s3 = boto3.client("s3", config=config)

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        from botocore.exceptions import ClientError

        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def save(self, record: FeedbackRecord, photo: bytes) -> Saved:
        key = self._key("records", record.record_name)
        try:
            found = self._read(key)
            earlier = None if found is None else _label_of(found)
            if earlier == record.label:
                return Saved.SAME
            photo_key = self._key("photos", record.photo_sha256)
            if not self._exists(photo_key):
                self._s3.put_object(Bucket=self.bucket, Key=photo_key, Body=photo)
            body = record.to_json().encode()
            self._s3.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
            )
        except self._errors as exc:
            raise FeedbackStoreError(f"{self.uri}: {exc}") from exc
        return Saved.NEW if earlier is None else Saved.REPLACED

    def records(self) -> Iterator[FeedbackRecord]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key("records") + "/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                body = self._s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                yield FeedbackRecord.from_json(body)

    def photo(self, sha256: str) -> bytes:
        key = self._key("photos", sha256)
        return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()


def _label_of(record_json: bytes) -> str | None:
    """The label of a stored record; None for one that cannot be read (it is then rewritten)."""
    try:
        return FeedbackRecord.from_json(record_json).label
    except (ValueError, TypeError):
        return None


def latest_per_answer(records: Iterable[FeedbackRecord]) -> list[FeedbackRecord]:
    """One record per answer, its latest label (stores of the older layout hold one per label)."""
    latest: dict[str, FeedbackRecord] = {}
    for record in records:
        kept = latest.get(record.answer_id)
        if kept is None or record.received_at >= kept.received_at:
            latest[record.answer_id] = record
    return sorted(latest.values(), key=lambda r: (r.received_at, r.answer_id))


def open_store(uri: str) -> FeedbackStore:
    """The store ``uri`` names: ``s3://bucket/prefix``, ``file://…`` or a plain folder path."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"FEEDBACK_URI must look like s3://bucket/prefix, got {uri!r}")
        return S3FeedbackStore(parsed.netloc, parsed.path)
    if parsed.scheme in ("", "file"):
        return LocalFeedbackStore(Path(parsed.path if parsed.scheme else uri).expanduser())
    raise ValueError(f"unsupported FEEDBACK_URI scheme {parsed.scheme!r} (use a folder or s3://)")
