"""Model outputs for the open-set calibration sets, computed once per artifact and cached.

The sets are Imagewoof train (threshold), Imagewoof val (in-distribution report) and the
cats / other-dog-breeds photos of ``ood/``. Photos go through ``model.preprocessing`` and the
artifact's own backend, exactly as in serving. Outputs are cached under
``cache/open_set/<key>/`` where the key hashes the artifact *without* its metadata (so
rewriting the open-set rule does not invalidate it) plus the preprocessing spec. Work is
saved in chunks, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.backends import Backend
from model.metadata import METADATA_KEY
from model.preprocessing import preprocess_bytes

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
CHUNK = 512
SETS = ("train", "val", "cats", "dogs")


@dataclass(frozen=True)
class PhotoSet:
    """One evaluation set: photo paths, and for in-distribution sets their class index."""

    name: str
    paths: tuple[Path, ...]
    labels: tuple[int, ...] | None = None
    groups: tuple[str, ...] | None = None  # OOD breed of each photo


def data_root() -> Path:
    return Path(os.environ.get("BREED_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def cache_root() -> Path:
    return Path(os.environ.get("BREED_CACHE_DIR", REPO_ROOT / "cache")) / "open_set"


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"missing {path} (set BREED_DATA_DIR to the data folder)")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def load_sets(root: Path, wnids: list[str], max_train: int = 0) -> dict[str, PhotoSet]:
    """The four sets, in index order. ``max_train`` > 0 keeps an evenly spaced subset."""
    index = {w: i for i, w in enumerate(wnids)}
    woof = _read_csv(root / "imagewoof" / "index.csv")
    sets: dict[str, PhotoSet] = {}
    for split in ("train", "val"):
        rows = [r for r in woof if r["split"] == split and r["wnid"] in index]
        if split == "train" and 0 < max_train < len(rows):
            rows = [rows[i] for i in np.linspace(0, len(rows) - 1, max_train).astype(int)]
        sets[split] = PhotoSet(
            split,
            tuple(root / "imagewoof" / r["path"] for r in rows),
            labels=tuple(index[r["wnid"]] for r in rows),
        )
    ood = _read_csv(root / "ood" / "index.csv")
    for kind, name in (("cat", "cats"), ("dog", "dogs")):
        rows = [r for r in ood if r["kind"] == kind]
        sets[name] = PhotoSet(
            name,
            tuple(root / "ood" / r["path"] for r in rows),
            groups=tuple(r["breed"] for r in rows),
        )
    return sets


def weights_fingerprint(path: Path) -> str:
    """SHA-256 of the artifact's content other than its metadata."""
    digest = hashlib.sha256()
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path))
        del proto.metadata_props[:]
        digest.update(proto.SerializeToString(deterministic=True))
    else:
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                name = info.filename
                # Metadata, a random per-save id and debug info change on every save.
                if name.endswith((f"extra/{METADATA_KEY}", "serialization_id", ".debug_pkl")):
                    continue
                # Archive folder name follows the file name; hash paths below it only.
                digest.update(info.filename.split("/", 1)[-1].encode())
                digest.update(zf.read(info))
    return digest.hexdigest()


def cache_key(path: Path, backend: Backend) -> str:
    prep = repr(sorted(asdict(backend.metadata.preprocessing).items()))
    digest = hashlib.sha256(weights_fingerprint(path).encode() + prep.encode())
    return digest.hexdigest()[:16]


def _run_chunk(backend: Backend, paths: tuple[Path, ...], batch_size: int) -> np.ndarray:
    spec = backend.metadata.preprocessing
    out = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack(
            [preprocess_bytes(p.read_bytes(), spec) for p in paths[start : start + batch_size]]
        )
        out.append(backend.run(batch).astype(np.float32))
    return np.concatenate(out)


def model_outputs(
    backend: Backend, photo_set: PhotoSet, cache_dir: Path, batch_size: int = 32
) -> np.ndarray:
    """Raw output rows for every photo of the set, from the cache where possible."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    listing = "\n".join(str(p) for p in photo_set.paths)
    list_hash = hashlib.sha256(listing.encode()).hexdigest()[:12]
    prefix = f"{photo_set.name}-{list_hash}"
    final = cache_dir / f"{prefix}.npy"
    if final.is_file():
        return np.load(final)
    chunks = []
    starts = range(0, len(photo_set.paths), CHUNK)
    for start in tqdm(
        starts, desc=f"{photo_set.name} ({len(photo_set.paths)} photos)", unit="chunk"
    ):
        part = cache_dir / f"{prefix}.part{start // CHUNK:04d}.npy"
        if not part.is_file():
            rows = _run_chunk(backend, photo_set.paths[start : start + CHUNK], batch_size)
            np.save(part.with_suffix(".tmp.npy"), rows)
            part.with_suffix(".tmp.npy").replace(part)
        chunks.append(np.load(part))
    outputs = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    np.save(final, outputs)
    for start in starts:
        (cache_dir / f"{prefix}.part{start // CHUNK:04d}.npy").unlink(missing_ok=True)
    log.info("cached %s outputs %s in %s", photo_set.name, outputs.shape, final)
    return outputs
