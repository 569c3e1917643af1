"""Evaluate an artifact exactly as the service runs it, on the photos the backbone never saw.

Photos go through ``model.preprocessing`` with the artifact's own ``Preprocessing`` and its
own backend; raw output rows are cached per (weights, preprocessing, photos), so rewriting the
metadata (open-set rule) or re-reporting never re-runs the network. Per split it reports:

- top-1 with a 95% Wilson interval, top-5, per-breed top-1 (with photo counts), confusion;
- "served accuracy": right AND accepted by the artifact's open-set rule; and the refused share.

Splits: ``unseen`` (ImageNet-validation photos: the honest test), ``web`` (web photos, mostly
beagles and golden retrievers), ``val`` (LEAKY: ~96% ImageNet-1k train photos).

    python -m training.lab.evaluate --artifact model/efficientnet_lite0_imagewoof.pt [--splits ...]
    python -m training.lab.evaluate --run kd_lite0 --splits val     # adds val to the run's metrics
    python -m training.lab.evaluate --artifact runs/x/model.pt --folder some/dir
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.artifact import atomic_write
from model.backends import Backend, load_backend
from model.metadata import IMAGEWOOF_CLASSES, ModelMetadata, OpenSetRule
from model.open_set import known_scores
from model.preprocessing import preprocess_bytes
from training.lab.answers import read_answers
from training.lab.cache import cache_folder, weights_fingerprint
from training.lab.data import Sample, load_split, scan_folder, train_samples
from training.lab.paths import run_dir

log = logging.getLogger(__name__)
NAMES = [c.name for c in IMAGEWOOF_CLASSES]
SPLITS = ("unseen", "web", "val")
LEAKY = "val"
VAL_CAVEAT = (
    "~96% of Imagewoof val are ImageNet-1k train photos: ImageNet-pretrained backbones have "
    "seen them, so val accuracy is optimistic (leaky)"
)
MIN_PHOTOS_PER_BREED = 20  # per-breed figures only where a breed has this many photos
# Each run's open-set rule, fixed before any run: the shipped scorer, threshold = the 2%
# quantile of its scores on evenly spaced train photos.
RULE_METHOD, RULE_QUANTILE, CALIBRATION_PHOTOS = "breed_mass_x_softmax", 0.02, 500
CHUNK = 256


def model_outputs(
    artifact: Path, paths: list[Path], backend: Backend | None = None, batch_size: int = 32
) -> np.ndarray:
    """Raw output rows of ``artifact`` for the photos, through the service preprocessing.

    Cached in chunks under ``<cache root>/outputs/<key>/``: an interrupted run resumes.
    """
    backend = backend or load_backend(artifact)
    spec = backend.metadata.preprocessing
    parts = {"weights": weights_fingerprint(Path(artifact)), "spec": dataclasses.asdict(spec)}
    folder = cache_folder("outputs", parts, paths)
    final = folder / "outputs.npy"
    if final.is_file():
        return np.load(final)
    folder.mkdir(parents=True, exist_ok=True)
    chunks = []
    for index, start in enumerate(tqdm(range(0, len(paths), CHUNK), desc="model outputs")):
        part = folder / f"part-{index:05d}.npy"
        if not part.is_file():
            rows = []
            end = min(start + CHUNK, len(paths))
            for at in range(start, end, batch_size):
                batch = [
                    preprocess_bytes(p.read_bytes(), spec)
                    for p in paths[at : min(at + batch_size, end)]
                ]
                rows.append(backend.run(np.stack(batch)).astype(np.float32))
            with atomic_write(part) as tmp:
                np.save(tmp, np.concatenate(rows))
        chunks.append(np.load(part))
    outputs = np.concatenate(chunks)
    with atomic_write(final) as tmp:
        np.save(tmp, outputs)
    for part in folder.glob("part-*.npy"):
        part.unlink()
    return outputs


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def split_metrics(outputs: np.ndarray, labels: np.ndarray, meta: ModelMetadata) -> dict[str, Any]:
    """Top-1 (+ Wilson CI), top-5, served accuracy, refusals, per breed, confusion."""
    answers = read_answers(outputs, meta)
    ranked = answers.ranked
    top1 = ranked[:, 0] == labels
    accepted = answers.known
    confusion = np.zeros((len(NAMES), len(NAMES)), dtype=int)
    np.add.at(confusion, (labels, ranked[:, 0]), 1)
    per_breed = {
        NAMES[c]: {"n": int((labels == c).sum()), "top1": round(float(top1[labels == c].mean()), 4)}
        for c in range(len(NAMES))
        if (labels == c).any()
    }
    n = len(labels)
    return {
        "n": n,
        "top1": round(float(top1.mean()), 4),
        "top1_ci95": [round(x, 4) for x in wilson(int(top1.sum()), n)],
        "top5": round(float((ranked[:, :5] == labels[:, None]).any(1).mean()), 4),
        "served": round(float((top1 & accepted).mean()), 4),
        "served_ci95": [round(x, 4) for x in wilson(int((top1 & accepted).sum()), n)],
        "refused": round(float((~accepted).mean()), 4),
        "per_breed": per_breed,
        "confusion": confusion.tolist(),
    }


def calibrate_rule(
    artifact: Path, backend: Backend, photos: list[Sample] | None = None
) -> OpenSetRule:
    """The lab's fixed open-set rule, thresholded on evenly spaced train photos.

    Setting a threshold needs the scores themselves, so this reads the runtime's scorer
    (``known_scores``) rather than the answers' verdicts.

    ``photos``: calibrate on these instead (e.g. train photos held out of training).
    """
    photos = photos or train_samples()
    picked = np.linspace(0, len(photos) - 1, min(CALIBRATION_PHOTOS, len(photos))).astype(int)
    outputs = model_outputs(artifact, [photos[i].path for i in picked], backend)
    trial = dataclasses.replace(backend.metadata, open_set=OpenSetRule(RULE_METHOD))
    scores = np.sort(known_scores(outputs, trial))
    threshold = float(scores[min(int(RULE_QUANTILE * len(scores)), len(scores) - 1)])
    return OpenSetRule(RULE_METHOD, threshold, {})


def evaluate_artifact(
    artifact: Path,
    splits: dict[str, list[Sample]],
    out_dir: Path | None = None,
    meta: ModelMetadata | None = None,
    backend: Backend | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics per split (``meta`` overrides the artifact's own, e.g. a new open-set rule).

    With ``out_dir``: a confusion matrix and a mistake gallery per split (gallery images are
    copies of data photos: ``out_dir`` must stay out of git).
    """
    backend = backend or load_backend(artifact)
    meta = meta or backend.metadata
    result = {}
    for split, samples in splits.items():
        outputs = model_outputs(artifact, [s.path for s in samples], backend)
        labels = np.array([s.label for s in samples])
        result[split] = split_metrics(outputs, labels, meta)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            m = result[split]
            title = f"{meta.name} on {split}: top-1 {m['top1']:.1%} (n={m['n']})"
            plot_confusion(np.array(m["confusion"]), out_dir / f"confusion_{split}.png", title)
            result[split]["mistakes"] = mistake_gallery(
                samples, read_answers(outputs, meta).probs, out_dir / f"mistakes_{split}.png"
            )
    return result


def plot_confusion(confusion: np.ndarray, path: Path, title: str) -> None:
    """Aggregate figure (counts only, no photos): safe to publish."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(NAMES)), NAMES, rotation=45, ha="right")
    ax.set_yticks(range(len(NAMES)), NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for (i, j), value in np.ndenumerate(confusion):
        if value:
            colour = "white" if value > confusion.max() / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def mistake_gallery(
    samples: list[Sample], probs: np.ndarray, path: Path, limit: int = 48, columns: int = 8
) -> list[dict[str, Any]]:
    """Contact sheet of the mistakes, most confident first; returns them as records.

    ``probs``: the answers' confidences per breed (``Answers.probs``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    predicted = probs.argmax(1)
    wrong = sorted(
        (i for i, s in enumerate(samples) if predicted[i] != s.label),
        key=lambda i: -probs[i, predicted[i]],
    )
    records = [
        {
            "photo": samples[i].path.name,
            "true": NAMES[samples[i].label],
            "predicted": NAMES[predicted[i]],
            "confidence": round(float(probs[i, predicted[i]]), 3),
        }
        for i in wrong
    ]
    shown = wrong[:limit]
    if shown:
        rows = -(-len(shown) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(columns * 2, rows * 2.4), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i, rec in zip(axes.flat, shown, records, strict=False):
            with Image.open(samples[i].path) as img:
                img.thumbnail((160, 160))
                ax.imshow(img.convert("RGB"))
            ax.set_title(
                f"{rec['photo'][:22]}\ntrue: {rec['true']}\npred: {rec['predicted']} "
                f"({rec['confidence']:.0%})",
                fontsize=6,
            )
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate an artifact as the service runs it.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--artifact", type=Path, help=".pt or .onnx artifact")
    target.add_argument("--run", help="a finished run: adds these splits to its metrics.json")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--splits", nargs="+", choices=(*SPLITS, "feedback"), default=list(SPLITS))
    source.add_argument("--folder", type=Path, help="any folder of <wnid>/ photos")
    parser.add_argument("--out", type=Path, default=None, help="folder for metrics + PNGs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.folder:
            splits = {args.folder.name: scan_folder(args.folder)}
        else:
            splits = {split: load_split(None, split) for split in args.splits}
        artifact = run_dir(args.run) / "model.pt" if args.run else args.artifact
        out = args.out or (
            run_dir(args.run) if args.run else artifact.parent / f"eval-{artifact.stem}"
        )
        result = evaluate_artifact(artifact, splits, out)
        if args.run:  # the run's own record gains the splits
            metrics = json.loads((out / "metrics.json").read_text())
            metrics["splits"].update(result)
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        else:
            (out / "metrics.json").write_text(json.dumps(result, indent=2))
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"evaluate failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for split, m in result.items():
        lo, hi = m["top1_ci95"]
        leaky = "  (LEAKY: " + VAL_CAVEAT + ")" if split == LEAKY else ""
        print(
            f"{split}: top-1 {m['top1']:.1%} [95% CI {lo:.1%}-{hi:.1%}], served {m['served']:.1%}"
            f", refused {m['refused']:.1%}, n={m['n']}{leaky}"
        )
        for breed, b in m["per_breed"].items():
            if b["n"] >= MIN_PHOTOS_PER_BREED and split == "web":
                print(f"  {breed}: {b['top1']:.1%} of {b['n']}")
    print(f"wrote {out}/metrics.json, confusion_*.png, mistakes_*.png (photos: keep out of git)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
