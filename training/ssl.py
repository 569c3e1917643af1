"""Barlow Twins self-supervised pretraining of Lite0's tail on Imagewoof (labels unused).

Starts from the ImageNet weights; each step takes a batch of cached lightly BYOL/Barlow-Twins
view pairs (``python -m training.tail --what pairs``: random resized crop, flip, colour jitter,
grey, blur, solarise at 128 px, pushed through the frozen prefix once), runs both views through
the trainable tail and a lightly ``BarlowTwinsProjectionHead``, and minimises lightly's
``BarlowTwinsLoss``. The checkpoint is then fine-tuned with the supervised recipe
(``training.distill`` with ``alpha: 0`` and ``init_checkpoint`` = this run's checkpoint).

    python -m training.ssl --config training/configs/ssl_bt_lite0.yaml
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from training.tail import (
    ArrayCache,
    Student,
    build_student,
    finish,
    fit,
    run_config_cli,
)

log = logging.getLogger(__name__)
FEATURES = 1280  # Lite0's pooled feature width


def pair_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """Cached view pairs (N×2×192×5×5, fp16) and labels (used only by the joint experiment)."""
    cache = ArrayCache("pairs")
    return torch.from_numpy(np.array(cache.load("maps"))), torch.from_numpy(
        np.array(cache.load("labels"))
    )


def projector(cfg: dict) -> BarlowTwinsProjectionHead:
    dim = int(cfg.get("projector_dim", 2048))
    return BarlowTwinsProjectionHead(FEATURES, dim, dim)


def barlow_twins_step(
    student: Student, head: BarlowTwinsProjectionHead, loss_fn: BarlowTwinsLoss, pair: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(BT loss, breed logits view 1, view 2) for a batch of cached view pairs B×2×C×H×W."""
    f1, b1, _ = student.logits(pair[:, 0])
    f2, b2, _ = student.logits(pair[:, 1])
    z1, z2 = head(f1).float(), head(f2).float()
    with torch.autocast("cpu", enabled=False):  # the cross-correlation needs float32
        loss = loss_fn(z1, z2)
    return loss, b1.float(), b2.float()


def run(cfg: dict, resume: bool = True) -> dict:
    command = f"python -m training.ssl --config {cfg.get('config_path', '<config>')}"
    maps, _ = pair_maps()  # labels deliberately unused
    student = build_student()
    head = projector(cfg)
    loss_fn = BarlowTwinsLoss(lambda_param=float(cfg.get("lambda_param", 5e-3)))

    def step_loss(indices: torch.Tensor, generator: torch.Generator):
        loss, _, _ = barlow_twins_step(student, head, loss_fn, maps[indices].float())
        return loss, {}

    out = fit(cfg, student, len(maps), step_loss, extra=head, resume=resume)
    return finish(
        cfg,
        student,
        out,
        "Imagewoof train images WITHOUT labels: Barlow Twins (lightly) on the tail, breed head "
        "still the zero-shot ImageNet rows (stage 1 of the SSL experiment)",
        command,
    )


def main(argv: list[str] | None = None) -> int:
    return run_config_cli(
        "ssl",
        "Barlow Twins pretraining (cached view pairs).",
        lambda cfg, resume: run(cfg, resume=resume),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
