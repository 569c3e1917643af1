"""The one definition of a cache key, used by every cache of the lab.

A key hashes everything that decides a cache's content (what computes it, how the photos are
prepared, which photos in which order), so a changed input can never reuse a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from model.metadata import METADATA_KEY
from training.lab.paths import cache_root


def cache_key(parts: dict[str, Any], paths: Iterable[Path]) -> str:
    """16 hex digits over ``parts`` (JSON, sorted keys) and the ordered photo paths."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for path in paths:
        digest.update(f"{path}\n".encode())
    return digest.hexdigest()[:16]


def cache_folder(kind: str, parts: dict[str, Any], paths: Iterable[Path]) -> Path:
    """``<cache root>/<kind>/<key>``."""
    return cache_root() / kind / cache_key(parts, paths)


def weights_fingerprint(path: Path) -> str:
    """SHA-256 of the artifact's content other than its metadata (a plain weight file: all of
    its bytes)."""
    digest = hashlib.sha256()
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path))
        del proto.metadata_props[:]
        digest.update(proto.SerializeToString(deterministic=True))
        return digest.hexdigest()
    if not zipfile.is_zipfile(path):
        digest.update(path.read_bytes())
        return digest.hexdigest()
    with zipfile.ZipFile(path) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            # Metadata, a random per-save id and debug info change on every save; the archive
            # folder is named after the file.
            if info.filename.endswith((f"extra/{METADATA_KEY}", "serialization_id", ".debug_pkl")):
                continue
            digest.update(info.filename.split("/", 1)[-1].encode())
            digest.update(zf.read(info))
    return digest.hexdigest()
