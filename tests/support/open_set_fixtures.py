"""Generated stand-ins for the open-set tests: a tiny artifact and a tiny photo data set.

The tiny network averages each colour channel and maps it to the real output layout
[10 breed logits | 1000 ImageNet logits]: greenish photos score as the ten breeds, reddish
ones as ImageNet "tabby cat" (281), bluish ones as another dog breed (ImageNet 200). The
10-way head only sees brightness, so the ImageNet-head scorers can tell them apart and the
10-way head alone cannot (like a breed head that never saw a cat).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from model.metadata import (
    IMAGEWOOF_CLASSES,
    ModelMetadata,
    OpenSetRule,
    OutputLayout,
    Preprocessing,
)

CAT_INDEX, OTHER_DOG_INDEX = 281, 200
COLOURS = {"green": 1, "red": 0, "blue": 2}


class ChannelMeanNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 1010)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[0:10, :] = 2.0  # breed head: brightness only, colour-blind
            self.head.bias[0] = 1.0  # ...and always prefers class 0
            breed_cols = [10 + c.imagenet_index for c in IMAGEWOOF_CLASSES]
            self.head.weight[breed_cols, 1] = 5.0
            self.head.weight[10 + CAT_INDEX, 0] = 5.0
            self.head.weight[10 + OTHER_DOG_INDEX, 2] = 5.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))


def tiny_metadata(rule: OpenSetRule | None = None) -> ModelMetadata:
    return ModelMetadata(
        name="tiny-test",
        architecture="channel-mean",
        version="0.0.1",
        classes=IMAGEWOOF_CLASSES,
        preprocessing=Preprocessing(16, 16, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        outputs=OutputLayout(breed=(0, 10), imagenet=(10, 1010)),
        open_set=rule or OpenSetRule(),
    )


def tiny_artifact(path: Path, rule: OpenSetRule | None = None) -> Path:
    """Export the tiny network as a real artifact (.pt TorchScript or .onnx)."""
    from training.release.export import export_onnx, export_torchscript

    export = export_onnx if path.suffix == ".onnx" else export_torchscript
    return export(ChannelMeanNet(), tiny_metadata(rule), path)


def coloured_jpeg(path: Path, colour: str, seed: int) -> Path:
    """A noisy 24×24 photo dominated by one channel, with random strength."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 70, size=(24, 24, 3))
    pixels[..., COLOURS[colour]] = rng.integers(110, 256) - rng.integers(0, 30, size=(24, 24))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, "JPEG", quality=90)
    return path


def tiny_dataset(root: Path, n_train: int = 60, n_val: int = 30, n_ood: int = 12) -> Path:
    """``imagewoof/`` (green photos, labelled class 0) and ``ood/`` (red cats, blue dogs)."""
    wnid, breed = IMAGEWOOF_CLASSES[0].wnid, IMAGEWOOF_CLASSES[0].name
    rows = []
    for split, count in (("train", n_train), ("val", n_val)):
        for i in range(count):
            rel = f"{split}/{wnid}/{wnid}_{i}.jpg"
            coloured_jpeg(
                root / "imagewoof" / rel, "green", seed=i + (0 if split == "train" else 10_000)
            )
            rows.append({"path": rel, "wnid": wnid, "breed": breed, "split": split})
    _write_csv(root / "imagewoof" / "index.csv", ["path", "wnid", "breed", "split"], rows)
    rows = []
    for kind, colour in (("cat", "red"), ("dog", "blue")):
        for i in range(n_ood):
            group = f"{kind}-breed-{i % 4}"
            rel = f"{kind}s/{group}/{i}.jpg"
            coloured_jpeg(root / "ood" / rel, colour, seed=1000 + i + (0 if kind == "cat" else 500))
            rows.append({"path": rel, "kind": kind, "breed": group, "source_path": rel})
    _write_csv(root / "ood" / "index.csv", ["path", "kind", "breed", "source_path"], rows)
    return root


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
