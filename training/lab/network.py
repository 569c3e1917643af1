"""The network the lab trains and ships, and the one place where it is split for training.

``BreedClassifier`` = timm backbone (pooled features) → 10-way breed head, plus the original
1000-way ImageNet head kept frozen for the service's "not one of my breeds" rule. The breed
head starts as the ten breed rows of the ImageNet head, so an untrained model is the zero-shot
model. ``split_backbone`` cuts the backbone into a frozen prefix and a trainable tail.
"""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn

from model.metadata import IMAGEWOOF_CLASSES
from training.lab.checkpoint import load_checkpoint
from training.lab.paths import run_dir
from training.lab.weights import create_pretrained

BREED_ROWS = [c.imagenet_index for c in IMAGEWOOF_CLASSES]


class BreedClassifier(nn.Module):
    """Backbone + breed head (+ frozen ImageNet head); output row ``[breed | ImageNet]``."""

    def __init__(self, backbone: nn.Module, breed_head: nn.Linear, imagenet_head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.breed_head = breed_head
        self.imagenet_head = imagenet_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return torch.cat([self.breed_head(features), self.imagenet_head(features)], dim=1)


def build_breed_model(arch: str, weights: str = "auto") -> BreedClassifier:
    """ImageNet-pretrained ``arch`` whose breed head is its own classifier's ten breed rows."""
    base = create_pretrained(arch, weights)
    imagenet_head = base.get_classifier()
    if not isinstance(imagenet_head, nn.Linear) or imagenet_head.out_features != 1000:
        raise ValueError(f"{arch}: expected a 1000-way linear ImageNet classifier")
    imagenet_head = copy.deepcopy(imagenet_head).requires_grad_(False)
    base.reset_classifier(0)  # base(x) now returns pooled features
    breed_head = nn.Linear(base.num_features, len(BREED_ROWS))
    with torch.no_grad():
        breed_head.weight.copy_(imagenet_head.weight[BREED_ROWS])
        breed_head.bias.copy_(imagenet_head.bias[BREED_ROWS])
    return BreedClassifier(base, breed_head, imagenet_head)


def load_run_network(name: str) -> tuple[BreedClassifier, dict]:
    """The trained network of ``runs/<name>`` and that run's experiment config (a dict)."""
    path = run_dir(name) / "checkpoint.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"run {name!r} has no checkpoint at {path}: train it first")
    state = load_checkpoint(path)
    config = state["config"]
    # Every tensor comes from the checkpoint: no pretrained file is needed (a run trained on
    # another machine may name a weight file that does not exist here).
    model = build_breed_model(config["arch"], "none")
    model.load_state_dict(state["model"])
    return model.eval(), config


def split_backbone(backbone: nn.Module, trainable_stages: int) -> tuple[nn.Module, nn.Module]:
    """(frozen prefix, trainable tail) with ``tail(prefix(x)) == backbone(x)``.

    0 = linear probe (empty tail), -1 = everything trainable (empty prefix), N = the last N
    stages of an EfficientNet-style timm model plus its head conv. Both parts hold the
    backbone's own modules, so training the tail trains the backbone that gets exported.
    """
    if trainable_stages == 0:
        return backbone, nn.Identity()
    if trainable_stages < 0:
        return nn.Identity(), backbone
    names = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")
    if not all(hasattr(backbone, n) for n in names):
        raise ValueError(
            f"{type(backbone).__name__}: partial unfreezing needs an EfficientNet-style timm model;"
            " use trainable_stages 0 (linear probe) or -1 (everything)"
        )
    blocks = list(backbone.blocks)
    if trainable_stages > len(blocks):
        raise ValueError(f"trainable_stages={trainable_stages} but the model has {len(blocks)}")
    cut = len(blocks) - trainable_stages
    prefix = nn.Sequential(backbone.conv_stem, backbone.bn1, *blocks[:cut])
    tail = nn.Sequential(*blocks[cut:], backbone.conv_head, backbone.bn2, backbone.global_pool)
    return prefix, tail


def module_digest(module: nn.Module) -> str:
    """SHA-256 of a module's tensors: caches of its outputs are keyed by what it computes."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class TrainNet(nn.Module):
    """What the optimiser sees: frozen prefix → tail → (breed logits, ImageNet logits, features).

    ``maps(x)`` runs the frozen prefix (or passes cached prefix outputs through when
    ``from_maps``); ``forward`` takes those maps. The prefix and (unless ``train_bn``) every
    BatchNorm keep their pretrained statistics in training mode.
    """

    def __init__(
        self, model: BreedClassifier, trainable_stages: int, from_maps: bool, train_bn: bool
    ) -> None:
        super().__init__()
        for param in model.parameters():
            param.requires_grad_(False)
        self.prefix, self.tail = split_backbone(model.backbone, trainable_stages)
        for param in [*self.tail.parameters(), *model.breed_head.parameters()]:
            param.requires_grad_(True)
        self.breed_head, self.imagenet_head = model.breed_head, model.imagenet_head
        self.from_maps, self.train_bn = from_maps, train_bn

    def train(self, mode: bool = True) -> TrainNet:
        super().train(mode)
        self.prefix.eval()
        if not self.train_bn:
            for module in self.tail.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    @torch.no_grad()
    def maps(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.from_maps else self.prefix(x)

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.tail(maps)
        return self.breed_head(features), self.imagenet_head(features), features
