"""Joint training: cross-entropy + ``bt_weight`` × Barlow Twins on the same batches.

Each step draws a batch of train images. The CE (+ LwF) part is exactly the control's
(``kd_lite0_ce.yaml``: random 7×7 crops/flips of the cached 256 px maps); the Barlow Twins part
takes the SAME images' cached lightly view pairs (128 px) through the same tail and a lightly
projection head. With ``bt_weight: 0`` the run equals the control step for step, so the row
measures the BT term alone.

    python -m training.joint --config training/configs/joint_bt_lite0.yaml
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from lightly.loss import BarlowTwinsLoss

from training.distill import lwf_loss
from training.ssl import barlow_twins_step, pair_maps, projector
from training.tail import (
    build_student,
    finish,
    fit,
    random_crop_flip,
    run_config_cli,
    train_maps,
)

log = logging.getLogger(__name__)


def run(cfg: dict, resume: bool = True) -> dict:
    command = f"python -m training.joint --config {cfg.get('config_path', '<config>')}"
    maps, labels = train_maps()
    pairs, pair_labels = pair_maps()
    if not torch.equal(labels, pair_labels):
        raise ValueError("train and pairs caches list the images in different orders")
    student = build_student()
    head = projector(cfg)
    loss_fn = BarlowTwinsLoss(lambda_param=float(cfg.get("lambda_param", 5e-3)))
    weight = float(cfg.get("bt_weight", 0.1))
    smoothing = float(cfg.get("label_smoothing", 0.1))
    lwf = float(cfg.get("lwf", 1.0))
    crop = int(cfg.get("crop", 7))

    def step_loss(indices: torch.Tensor, generator: torch.Generator):
        views = random_crop_flip(maps[indices].float(), crop, generator)
        _, breed, imagenet = student.logits(views)
        ce = F.cross_entropy(breed.float(), labels[indices], label_smoothing=smoothing)
        bt, _, _ = barlow_twins_step(student, head, loss_fn, pairs[indices].float())
        loss = ce + weight * bt
        scalars = {"ce": float(ce), "bt": float(bt)}
        if lwf > 0:
            keep = lwf_loss(imagenet, student.original_imagenet_logits(views))
            loss = loss + lwf * keep
            scalars["lwf"] = float(keep)
        return loss, scalars

    out = fit(cfg, student, len(labels), step_loss, extra=head, resume=resume)
    return finish(
        cfg,
        student,
        out,
        f"Imagewoof train (8686 images, local copy): CE + {weight} x Barlow Twins (lightly view "
        "pairs of the same images), tail fine-tuned on cached frozen-prefix maps",
        command,
    )


def main(argv: list[str] | None = None) -> int:
    return run_config_cli(
        "joint",
        "Joint CE + Barlow Twins training.",
        lambda cfg, resume: run(cfg, resume=resume),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
