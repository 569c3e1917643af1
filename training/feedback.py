"""Lab command: pull the corrections people sent into the ``feedback`` split.

    python -m training.feedback --store /var/breedrecognizer/feedback   # or s3://bucket/prefix

Reads the service's store (``FEEDBACK_URI``; S3 through boto3's ``AWS_*`` settings) and
writes ``<data>/feedback/``: ``<wnid>/<sha256>.<ext>`` for photos of the ten breeds (the
``feedback`` split, evaluated with every run and added to training by ``train_with_feedback``),
``<wnid>/`` too for another dog breed, wild canid or cat people named (what an answer's
``looks_like`` may say: evaluated with ``ood/``, and by ``training.reports.looks_like``) and
``none/`` for "none of those" (evaluated with ``ood/``), listed in ``index.csv``.
An answer counts once, with its latest label (the store keeps one record per answer; older
stores may hold one per label, and the latest wins there too). A photo is kept once: by its
SHA-256 within the store, and never when it is already a photo of train, val, ``unseen`` or
``web``, by SHA-256 or by perceptual hash (a re-encoded or resized copy: the service stores
its own private copy of each photo). A photo people labelled two ways in different answers
goes with the label most answers gave (a tie drops it). The split is rebuilt whole each
time, so it never mixes with ``unseen`` or ``web``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model.looks_like import OTHER_CLASSES
from model.metadata import IMAGEWOOF_CLASSES
from model.preprocessing import ImageDecodeError, decode_image
from service.feedback.store import (
    NONE_LABEL,
    FeedbackRecord,
    FeedbackStoreError,
    latest_per_answer,
    open_store,
)
from training.lab.cache import cache_folder
from training.lab.data import FEEDBACK_COLUMNS, feedback_root, imagewoof_root
from training.lab.paths import data_root

# Perceptual hashes (64-bit pHash) this close are the same photo re-encoded or resized.
SAME_PHOTO_BITS = 4
HELD_SPLITS = ("train", "val", "unseen", "web")
TEN = {c.wnid for c in IMAGEWOOF_CLASSES}
NAMES = {c.wnid: c.name for c in (*IMAGEWOOF_CLASSES, *OTHER_CLASSES)}


@dataclass(frozen=True)
class Pulled:
    """One photo of the split: its bytes, the label kept and the records behind it."""

    sha256: str
    photo: bytes
    label: str
    records: tuple[FeedbackRecord, ...]


def perceptual_hash(data: bytes) -> int:
    """64-bit pHash of the photo as the service decodes it (upright RGB)."""
    import imagehash

    return int(str(imagehash.phash(decode_image(data))), 16)


def held_hashes(root: Path) -> tuple[set[str], np.ndarray]:
    """SHA-256 and perceptual hashes of every photo of the held splits (the latter cached)."""
    index = imagewoof_root(root) / "index.csv"
    if not index.is_file():
        raise FileNotFoundError(
            f"no {index}: the lab's photos, which the feedback is deduplicated against"
        )
    with index.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] in HELD_SPLITS]
    paths = [imagewoof_root(root) / r["path"] for r in rows]
    folder = cache_folder("phash", {"hash": "imagehash.phash 64-bit"}, paths)
    sha = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    if (folder / "phash.npy").is_file():
        return sha, np.load(folder / "phash.npy")
    hashes = np.array([perceptual_hash(p.read_bytes()) for p in paths], dtype=np.uint64)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "phash.npy", hashes)
    return sha, hashes


def near_copy(photo_hash: int, hashes: np.ndarray) -> bool:
    if not len(hashes):
        return False
    xor = np.bitwise_xor(hashes, np.uint64(photo_hash))
    bits = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
    return bool((bits <= SAME_PHOTO_BITS).any())


def gather(records: list[FeedbackRecord], store) -> tuple[list[Pulled], Counter]:
    """One entry per photo, with the label most people gave; counts what was dropped."""
    by_photo: dict[str, list[FeedbackRecord]] = defaultdict(list)
    for record in records:
        by_photo[record.photo_sha256].append(record)
    pulled, dropped = [], Counter()
    for sha, group in sorted(by_photo.items()):
        votes = Counter(r.label for r in group).most_common()
        if len(votes) > 1 and votes[0][1] == votes[1][1]:
            dropped["labelled two ways, tied"] += 1
            continue
        dropped["same photo again"] += len(group) - 1
        pulled.append(Pulled(sha, store.photo(sha), votes[0][0], tuple(group)))
    return pulled, dropped


def suffix_of(photo: bytes) -> str:
    with Image.open(io.BytesIO(photo)) as image:
        kind = (image.format or "bin").lower()
    return {"jpeg": ".jpg", "mpo": ".jpg"}.get(kind, f".{kind}")


def write_split(pulled: list[Pulled], target: Path) -> int:
    """Write the photos and ``index.csv`` into a fresh folder, then swap it in whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".feedback-", dir=target.parent))
    rows = []
    for item in pulled:
        rel = f"{item.label}/{item.sha256}{suffix_of(item.photo)}"
        (fresh / item.label).mkdir(exist_ok=True)
        (fresh / rel).write_bytes(item.photo)
        first = item.records[0]
        named = (first.answer.get("breed") or {}).get("wnid", NONE_LABEL)
        rows.append(
            {
                "path": rel,
                "label": item.label,
                "breed": NAMES.get(item.label, NONE_LABEL),
                "sha256": item.sha256,
                "answered": named,
                "verdict": first.answer.get("verdict", ""),
                "model_version": (first.answer.get("model") or {}).get("version", ""),
                "corrections": len(item.records),
                "received_at": min(r.received_at for r in item.records),
            }
        )
    with (fresh / "index.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FEEDBACK_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return len(rows)


def pull(store_uri: str, root: Path) -> dict[str, int]:
    """The whole command; returns what it counted."""
    store = open_store(store_uri)
    every = list(store.records())
    records = latest_per_answer(every)
    pulled, dropped = gather(records, store)
    if len(every) > len(records):
        dropped["earlier label of an answer"] = len(every) - len(records)
    held_sha, held_phash = held_hashes(root)
    kept = []
    for item in pulled:
        if item.sha256 in held_sha:
            dropped["already in train/val/unseen/web (same bytes)"] += 1
        elif near_copy(perceptual_hash(item.photo), held_phash):
            dropped["already in train/val/unseen/web (perceptual hash)"] += 1
        else:
            kept.append(item)
    written = write_split(kept, feedback_root(root))
    breeds = sum(1 for item in kept if item.label in TEN)
    others = sum(1 for item in kept if item.label not in TEN and item.label != NONE_LABEL)
    return {
        "records": len(records),
        "photos": written,
        "breed photos (feedback split)": breeds,
        "other breeds, wild canids, cats (with ood/)": others,
        "none of those (with ood/)": written - breeds - others,
        **dict(dropped),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="FEEDBACK_URI: a folder or s3://…")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: the lab's data")
    args = parser.parse_args(argv)
    root = args.data_dir or data_root()
    try:
        counts = pull(args.store, root)
    except (FeedbackStoreError, ImageDecodeError, OSError, ValueError, KeyError) as exc:
        print(f"feedback: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    for name, count in counts.items():
        print(f"{name}: {count}")
    print(f"wrote {feedback_root(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
