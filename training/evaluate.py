"""Evaluate an artifact exactly as the service runs it: top-1/top-5, per class, plots.

The artifact is opened with ``model.predictor`` (same backend, same metadata), images go
through ``model.preprocessing`` with the artifact's own ``Preprocessing`` and outputs through
``Predictor.interpret``: evaluated = served. Works on a split of Imagewoof or on any folder
of ``<wnid>/`` images.

    python -m training.evaluate --artifact model/efficientnet_lite0_imagewoof.pt [--split val]
    python -m training.evaluate --artifact runs/x/model.pt --folder some/dir --out /tmp/eval
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.backends import load_backend
from model.metadata import IMAGEWOOF_CLASSES
from model.predictor import Predictor
from training.data import ImageDataset, Sample, load_split, scan_folder
from training.transforms import EvalTransform

log = logging.getLogger(__name__)
NAMES = [c.name for c in IMAGEWOOF_CLASSES]


def predict_samples(
    predictor: Predictor, samples: list[Sample], batch_size: int = 64, workers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(N×10 breed probabilities, N labels) for the samples, through the service runtime."""
    dataset = ImageDataset(samples, EvalTransform(predictor.metadata.preprocessing))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    probs, labels = [], []
    order = [c.wnid for c in predictor.metadata.classes]
    for images, batch_labels in tqdm(loader, desc="evaluating", unit="batch"):
        for prediction in predictor.predict_batch(images.numpy(), top_k=len(order)):
            row = np.zeros(len(order), dtype=np.float32)
            for score in prediction.top_k:
                row[order.index(score.wnid)] = score.confidence
            probs.append(row)
        labels.append(batch_labels.numpy())
    return np.stack(probs), np.concatenate(labels)


def summarise(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Top-1/top-5, per-class accuracy and the confusion matrix (rows = true class)."""
    ranked = np.argsort(-probs, axis=1)
    top1 = ranked[:, 0] == labels
    top5 = (ranked[:, :5] == labels[:, None]).any(axis=1)
    n = len(NAMES)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (labels, ranked[:, 0]), 1)
    per_class = {
        NAMES[i]: round(float(top1[labels == i].mean()), 4) if (labels == i).any() else None
        for i in range(n)
    }
    return {
        "n_images": len(labels),
        "top1": round(float(top1.mean()), 4),
        "top5": round(float(top5.mean()), 4),
        "per_class_top1": per_class,
        "confusion": confusion.tolist(),
    }


def plot_confusion(confusion: np.ndarray, path: Path, title: str) -> None:
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
    threshold = confusion.max() / 2
    for (i, j), value in np.ndenumerate(confusion):
        if value:
            color = "white" if value > threshold else "black"
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_mistakes(
    samples: list[Sample], probs: np.ndarray, path: Path, limit: int = 30, columns: int = 6
) -> int:
    """Contact sheet of the most confident mistakes: true vs predicted (confidence)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    predicted = probs.argmax(axis=1)
    wrong = [i for i, s in enumerate(samples) if predicted[i] != s.label]
    wrong.sort(key=lambda i: -probs[i, predicted[i]])
    shown = wrong[:limit]
    if not shown:
        return 0
    rows = (len(shown) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.2, rows * 2.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown, strict=False):
        with Image.open(samples[i].path) as img:
            img.thumbnail((160, 160))
            ax.imshow(img.convert("RGB"))
        truth, guess = NAMES[samples[i].label], NAMES[predicted[i]]
        ax.set_title(f"true: {truth}\npred: {guess} ({probs[i, predicted[i]]:.0%})", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return len(wrong)


def evaluate_artifact(
    artifact: Path,
    samples: list[Sample],
    out_dir: Path | None = None,
    batch_size: int = 64,
    split: str = "val",
    threads: int | None = None,
) -> dict[str, Any]:
    """Metrics of ``artifact`` on ``samples``; with ``out_dir`` also writes the two PNGs."""
    predictor = Predictor(load_backend(artifact, threads))
    probs, labels = predict_samples(predictor, samples, batch_size)
    result = {"split": split, **summarise(probs, labels)}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        name = predictor.metadata.name
        title = f"{name} on {split}: top-1 {result['top1']:.2%} (n={len(labels)})"
        plot_confusion(np.array(result["confusion"]), out_dir / "confusion.png", title)
        plot_mistakes(samples, probs, out_dir / "mistakes.png")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate an artifact as the service runs it.")
    parser.add_argument("--artifact", type=Path, required=True, help=".pt or .onnx artifact")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", default="val", help="Imagewoof split (default val)")
    source.add_argument("--folder", type=Path, help="any folder of <wnid>/ images")
    parser.add_argument("--data", type=Path, default=None, help="data root (default shared)")
    parser.add_argument("--out", type=Path, default=None, help="folder for metrics + PNGs")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        samples = scan_folder(args.folder) if args.folder else load_split(args.data, args.split)
        split = str(args.folder) if args.folder else args.split
        out = args.out or args.artifact.parent / f"eval-{Path(split).name}"
        result = evaluate_artifact(args.artifact, samples, out, args.batch_size, split)
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"evaluate failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    print(f"top-1 {result['top1']:.2%}  top-5 {result['top5']:.2%}  on {result['n_images']} images")
    print("note: ~96% of Imagewoof val are ImageNet-1k train photos (val is optimistic)")
    print(f"wrote {out}/metrics.json, confusion.png, mistakes.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
