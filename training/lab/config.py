"""The one experiment schema: every run of the lab is an ``Experiment`` read from a YAML file.

Unknown keys and wrong types are refused (pydantic, strict), so a typo never silently becomes
a default. ``load_experiment`` turns any such problem into one ``ConfigError`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Loss = Literal["none", "ce", "kd", "barlow_twins", "joint"]
Split = Literal["unseen", "web", "val", "feedback"]


class ConfigError(ValueError):
    """An experiment file that cannot be used; the message is one line."""


class Experiment(BaseModel):
    """One experiment: the network, what is trained, on which inputs, with which loss."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    experiment: str = ""  # short label in the results table
    arch: str = "tf_efficientnet_lite0"
    weights: str = "auto"  # auto | hub | none | path to a checkpoint
    init_from: str | None = None  # run whose trained network this one starts from
    # WiSE-FT (training.lab.wise): mix init_from's weights with the zero-shot network's; the alpha
    # is the best of these on the train photos init_from held out (its holdout_every).
    wise_alphas: list[float] = []
    input_size: int | None = None  # serving size; default: the pretrained size

    # What is trained: 0 = linear probe, N = last N stages + head conv, -1 = everything.
    trainable_stages: int = Field(default=1, ge=-1)
    train_bn: bool = False  # False: BatchNorm keeps its pretrained statistics
    train_fraction: float = Field(default=1.0, gt=0, le=1)  # every k-th train image
    # Every k-th train photo is held out of training: the open-set threshold is set on these
    # photos the network has not memorised (training.lab.holdout).
    holdout_every: int | None = Field(default=None, ge=2)
    # Also train on the photos of the ten breeds people corrected (``python -m
    # training.feedback``); they are then no longer a fair test, and the feedback column says so.
    train_with_feedback: bool = False

    # Inputs. "cached": the frozen prefix runs once per fixed view and the maps are cached
    # (CPU-affordable); "images": every step augments and runs the photos end to end.
    inputs: Literal["cached", "images"] = "cached"
    view_size: int | None = None  # cached train view: centre crop size (default input_size)
    view_resize: int | None = None  # ... after resizing the shorter side (default size / 0.875)
    flip_view: bool = False  # also cache the mirrored view; one of them is drawn per step
    map_crop: int | None = None  # random crop of the cached maps (cells); None = whole map
    map_flip: bool = False  # random horizontal flip of the cached maps
    pair_size: int = 128  # Barlow Twins view pairs (lightly BYOL views), cached at this size
    # "images" inputs: crop + flip, or "photo": also thumbnail / JPEG / blur / colour
    # degradations like the photos people send (training.lab.photo_augment).
    augment: Literal["crop_flip", "photo"] = "crop_flip"
    ema_decay: float | None = Field(default=None, gt=0, lt=1)  # exported weights: their EMA

    # Schedule: exactly one of steps / epochs.
    steps: int | None = Field(default=None, ge=0)
    epochs: float | None = Field(default=None, ge=0)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-4, ge=0)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1)
    precision: Literal["bf16", "fp32"] = "fp32"  # bf16 autocast: for GPUs / CPUs with bf16 units
    max_train_minutes: float | None = None  # safety stop; a stopped run says so
    seed: int = 0
    workers: int = Field(default=1, ge=0)  # image decoding processes ("images" inputs)

    # Loss.
    loss: Loss = "ce"
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    lwf: float = Field(default=1.0, ge=0)  # keep the ImageNet logits (learning without forgetting)
    lwf_temperature: float = Field(default=1.0, gt=0)
    alpha: float = Field(default=0.0, ge=0, le=1)  # KD weight
    temperature: float = Field(default=4.0, gt=0)  # KD temperature
    teachers: list[str] = []  # runs whose networks teach (KD)
    teacher_zero_shot: bool = True  # ... together with their zero-shot ImageNet networks
    bt_weight: float = Field(default=1.0, ge=0)  # Barlow Twins weight ("joint")
    projector_dim: int = Field(default=2048, ge=1)
    lambda_param: float = Field(default=5e-3, ge=0)

    # Output.
    # val (3767 leaky photos) costs ~4 CPU-min per Lite0 run: add it when wanted, or later
    # with ``python -m training.lab.evaluate --run <name> --splits val``.
    eval_splits: list[Split] = ["unseen", "web"]
    onnx: bool = False
    version: str = "1.0.0"
    budget: str = ""
    notes: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if self.loss != "none" and (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of 'steps' and 'epochs'")
        if self.loss == "kd" and not self.teachers:
            raise ValueError("loss 'kd' needs 'teachers'")
        if self.trainable_stages == 0 and self.loss in ("barlow_twins", "joint"):
            raise ValueError("Barlow Twins needs trainable backbone layers (trainable_stages != 0)")
        if self.inputs == "images" and self.loss in ("barlow_twins", "joint"):
            raise ValueError("Barlow Twins runs on cached view pairs (inputs: cached)")
        if self.wise_alphas and not (self.init_from and self.holdout_every):
            raise ValueError("wise_alphas needs init_from and the same holdout_every")
        if self.augment != "crop_flip" and self.inputs != "images":
            raise ValueError("'augment' applies to photos (inputs: images)")
        return self


def _one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_experiment(raw: object, source: str = "config") -> Experiment:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values")
    try:
        return Experiment(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_one_line(exc)}") from None


def load_experiment(path: Path) -> Experiment:
    """Read and validate one experiment YAML; every problem is a one-line ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: {first}") from None
    return parse_experiment(raw, str(path))


def stored_experiment(raw: dict, source: str) -> Experiment:
    """A run's experiment as its checkpoint saved it, read by the current schema.

    A key the schema no longer has is dropped if it holds None (an option that was off then
    changes nothing now); any other unknown key is still a ``ConfigError``.
    """
    kept = {k: v for k, v in raw.items() if k in Experiment.model_fields or v is not None}
    return parse_experiment(kept, source)
