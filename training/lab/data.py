"""Imagewoof on disk: which images make a split, and a torch Dataset over them.

Two sources give the same layout ``<root>/<split>/<wnid>/*``: the local copy (the data root
of ``training.lab.paths``, with an ``index.csv`` listing train, val, unseen and web) and the
official fast.ai archives (160 / 320 / full; train and val only), downloaded once,
checksum-verified and cached. Any other folder of ``<wnid>/`` sub-folders reads the same way.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from model.artifact import atomic_write
from model.metadata import IMAGEWOOF_CLASSES
from training.lab.paths import cache_root, data_root

log = logging.getLogger(__name__)

WNIDS: tuple[str, ...] = tuple(c.wnid for c in IMAGEWOOF_CLASSES)
LABEL_OF: dict[str, int] = {wnid: i for i, wnid in enumerate(WNIDS)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# fast.ai Imagewoof v2 archives: URL and the MD5s published for them (fastai / catalyst lists;
# the 160 px archive was re-uploaded once, so two digests are known for it).
FASTAI_BASE = "https://s3.amazonaws.com/fast-ai-imageclas/"
FASTAI_ARCHIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "160": (
        "imagewoof2-160.tgz",
        ("3d200a7be99704a0d7509be2a9fbfe15", "fcd23cc7dfce8837c95a8f9d63a128b7"),
    ),
    "320": ("imagewoof2-320.tgz", ("0f46d997ec2264e97609196c95897a44",)),
    "full": ("imagewoof2.tgz", ("9aafe18bcdb1632c4249a76c458465ba",)),
}


class DataError(RuntimeError):
    """The data set is missing, malformed, or failed its checksum."""


@dataclass(frozen=True)
class Sample:
    """One labelled image: file path, class index (IMAGEWOOF_CLASSES order) and wnid."""

    path: Path
    label: int
    wnid: str


def imagewoof_root(root: Path | None = None) -> Path:
    """The Imagewoof folder (holding train/ and val/) under ``root`` or the shared data folder."""
    root = Path(root) if root is not None else data_root()
    return root / "imagewoof" if (root / "imagewoof").is_dir() else root


def _label(wnid: str, where: Path) -> int:
    if wnid not in LABEL_OF:
        raise DataError(f"{where}: {wnid!r} is not one of the 10 Imagewoof wnids")
    return LABEL_OF[wnid]


def scan_folder(folder: Path) -> list[Sample]:
    """Every image in ``folder/<wnid>/``, sorted by path (any folder laid out like Imagewoof)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    samples = [
        Sample(path, _label(sub.name, sub), sub.name)
        for sub in sorted(p for p in folder.iterdir() if p.is_dir())
        for path in sorted(sub.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise DataError(f"no images found in {folder}/<wnid>/")
    return samples


def scan_images(folder: Path) -> list[Path]:
    """Every image under ``folder`` at any depth, sorted by path (unlabelled photos, ``ood/``)."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def load_split(root: Path | None, split: str) -> list[Sample]:
    """The samples of ``split`` from ``index.csv`` if present, else a folder scan.

    ``feedback`` is the photos of the ten breeds people corrected (``load_feedback``).
    """
    if split == FEEDBACK_SPLIT:
        return load_feedback(root)  # type: ignore[return-value]
    root = imagewoof_root(root)
    index = root / "index.csv"
    if not index.is_file():
        return scan_folder(root / split)
    with index.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    if not rows:
        raise DataError(f"{index} lists no images for split {split!r}")
    return [Sample(root / row["path"], _label(row["wnid"], index), row["wnid"]) for row in rows]


def class_counts(samples: list[Sample]) -> list[int]:
    counts = [0] * len(WNIDS)
    for sample in samples:
        counts[sample.label] += 1
    return counts


class ImageDataset(Dataset):
    """Samples → (transform(file bytes), label, index). Bytes: eval reuses the service decoder."""

    def __init__(self, samples: list[Sample], transform: Callable[[bytes], Any]) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        sample = self.samples[index]
        return self.transform(sample.path.read_bytes()), sample.label, index


# --- the official fast.ai download -------------------------------------------------------------


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: Path, accepted: tuple[str, ...]) -> None:
    """Raise DataError unless the file's MD5 is one of ``accepted``."""
    got = file_md5(path)
    if got not in accepted:
        published = ", ".join(accepted)
        raise DataError(f"{path.name}: MD5 {got} does not match the published {published}")


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a .tgz refusing absolute paths, '..' and links (tarfile's "data" filter)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(dest, filter="data")
        tops = {Path(m.name).parts[0] for m in tar.getmembers() if m.name not in ("", ".")}
    if len(tops) != 1:
        raise DataError(f"{archive.name}: expected one top-level folder, found {sorted(tops)}")
    return dest / tops.pop()


def _download(url: str, target: Path) -> None:
    from tqdm import tqdm

    log.info("downloading %s", url)
    with (
        atomic_write(target) as partial,
        urllib.request.urlopen(url, timeout=60) as response,
        partial.open("wb") as out,
    ):
        total = int(response.headers.get("Content-Length") or 0)
        with tqdm(total=total or None, unit="B", unit_scale=True, desc=target.name) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))


def fetch_imagewoof(
    size: str = "320",
    cache_dir: Path | None = None,
    base_url: str = FASTAI_BASE,
    accepted_md5: tuple[str, ...] | None = None,
) -> Path:
    """Download (once) + verify + extract the fast.ai archive; returns the folder with train/val.

    Cached under ``cache_dir`` (default ``<cache root>/data``); a complete extraction is
    marked by a ``.complete`` file so an interrupted one is redone.
    """
    if size not in FASTAI_ARCHIVES:
        raise DataError(f"unknown Imagewoof size {size!r}; choose one of {sorted(FASTAI_ARCHIVES)}")
    filename, published = FASTAI_ARCHIVES[size]
    accepted = accepted_md5 or published
    cache_dir = Path(cache_dir or cache_root() / "data")
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = cache_dir / filename
    marker = cache_dir / (filename + ".complete")
    if marker.is_file():
        return cache_dir / marker.read_text().strip()
    if not archive.is_file():
        try:
            _download(base_url + filename, archive)
        except OSError as exc:
            raise DataError(f"cannot download {base_url + filename}: {exc}") from exc
    try:
        verify_checksum(archive, accepted)
    except DataError:
        archive.unlink()  # a corrupt download must not be reused
        raise
    folder = safe_extract(archive, cache_dir)
    marker.write_text(folder.name)
    log.info("Imagewoof %s ready in %s", size, folder)
    return folder


FEEDBACK_SPLIT = "feedback"
# index.csv of the feedback split (written by ``python -m training.feedback``).
FEEDBACK_COLUMNS = (
    "path",
    "label",
    "breed",
    "sha256",
    "answered",
    "verdict",
    "model_version",
    "corrections",
    "received_at",
)


def feedback_root(root: Path | None = None) -> Path:
    """``<data>/feedback``: the photos people corrected (``python -m training.feedback``)."""
    return (Path(root) if root is not None else data_root()) / FEEDBACK_SPLIT


def has_feedback(root: Path | None = None) -> bool:
    return (feedback_root(root) / "index.csv").is_file()


def load_feedback(root: Path | None = None, breeds: bool = True) -> list[Sample] | list[Path]:
    """The feedback split: photos of the ten breeds as samples, or (``breeds=False``) the
    paths of those people said are none of them ("none", or another breed, wild canid or
    cat: ``load_feedback_others``), which go with ``ood/``."""
    folder = feedback_root(root)
    if not has_feedback(root):
        raise DataError(f"no feedback split under {folder} (run python -m training.feedback)")
    with (folder / "index.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not breeds:
        return [folder / r["path"] for r in rows if r["label"] not in LABEL_OF]
    return [
        Sample(folder / r["path"], LABEL_OF[r["label"]], r["label"])
        for r in rows
        if r["label"] in LABEL_OF
    ]


def load_feedback_others(root: Path | None = None) -> list[tuple[Path, str]]:
    """(path, wnid) of the feedback photos people named another dog breed, wild canid or cat
    (an answer's ``looks_like`` classes, model/looks_like.py): what it is beyond the ten."""
    from model.looks_like import OTHER_BY_WNID

    folder = feedback_root(root)
    if not has_feedback(root):
        raise DataError(f"no feedback split under {folder} (run python -m training.feedback)")
    with (folder / "index.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [(folder / r["path"], r["label"]) for r in rows if r["label"] in OTHER_BY_WNID]


def train_samples(fraction: float = 1.0, root: Path | None = None) -> list[Sample]:
    """Imagewoof train, every k-th photo for ``fraction`` 1/k (sorted by class: stratified)."""
    return load_split(root, "train")[:: round(1 / fraction)]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Download the fast.ai Imagewoof archive.")
    parser.add_argument("--download", choices=sorted(FASTAI_ARCHIVES), required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        folder = fetch_imagewoof(args.download)
    except DataError as exc:
        print(f"download failed: {exc}", file=sys.stderr)
        return 1
    print(f"Imagewoof in {folder}: set BREED_DATA_DIR={folder} (train and val only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
