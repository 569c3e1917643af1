"""Knowledge distillation into tf_efficientnet_lite0 (the served student), on cached maps.

Loss per batch: ``alpha * T² * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``
on the ten breed logits, plus ``lwf * KL`` between the student's ImageNet logits and the
frozen pretrained network's on the same view ("learning without forgetting"), so the
1000-way ImageNet head the service keeps for "not one of my breeds" stays meaningful.

Teacher logits are cached once (``python -m training.tail --what teacher``), so a student step
costs only the tail. ``alpha: 0`` is plain fine-tuning of the same tail with the same budget:
the control every experiment row is compared with; ``init_checkpoint`` fine-tunes from an
SSL checkpoint (the second stage of the SSL experiment).

    python -m training.distill --config training/configs/kd_lite0.yaml
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from training.tail import (
    MAP_SHAPE,
    SERVE_SPEC,
    SPLIT,
    ArrayCache,
    build_student,
    finish,
    fit,
    load_config,
    random_crop_flip,
    train_maps,
)

log = logging.getLogger(__name__)


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, kd, ce): Hinton's distillation loss on temperature-softened logits + CE."""
    ce = F.cross_entropy(student, targets, label_smoothing=label_smoothing)
    if alpha == 0:
        return ce, torch.zeros(()), ce
    kd = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * (temperature**2)
    return alpha * kd + (1 - alpha) * ce, kd, ce


def lwf_loss(imagenet: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """KL from the frozen pretrained network's ImageNet distribution to the student's."""
    return F.kl_div(
        F.log_softmax(imagenet.float(), dim=1),
        F.log_softmax(original.float(), dim=1),
        log_target=True,
        reduction="batchmean",
    )


def teacher_logits() -> torch.Tensor:
    """Cached teacher breed logits on the train view (mean over its cached views: image, mirror)."""
    cache = ArrayCache("teacher")
    return torch.from_numpy(np.array(cache.load("logits"))).mean(dim=1)


def run(cfg: dict, resume: bool = True) -> dict:
    command = f"python -m training.distill --config {cfg.get('config_path', '<config>')}"
    split = int(cfg.get("split", SPLIT))
    maps, labels = train_maps(split)
    alpha = float(cfg.get("alpha", 0.0))
    temperature = float(cfg.get("temperature", 1.0))
    lwf = float(cfg.get("lwf", 1.0))
    smoothing = float(cfg.get("label_smoothing", 0.1))
    teacher = teacher_logits() if alpha > 0 else None
    if teacher is not None:
        agree = float((teacher.argmax(1) == labels).float().mean())
        log.info("teacher top-1 on the train view: %.4f", agree)
    student = build_student(init_checkpoint=cfg.get("init_checkpoint"), split=split)
    crop = int(cfg.get("crop", SERVE_SPEC.input_size // MAP_SHAPE[split][1]))

    def step_loss(indices: torch.Tensor, generator: torch.Generator):
        views = random_crop_flip(maps[indices].float(), crop, generator)
        _, breed, imagenet = student.logits(views)
        t = teacher[indices] if teacher is not None else None
        loss, kd, ce = kd_loss(breed.float(), t, labels[indices], alpha, temperature, smoothing)
        scalars = {"ce": float(ce), "kd": float(kd)}
        if lwf > 0:
            keep = lwf_loss(imagenet, student.original_imagenet_logits(views))
            loss = loss + lwf * keep
            scalars["lwf"] = float(keep)
        return loss, scalars

    out = fit(cfg, student, len(labels), step_loss, resume=resume)
    what = "cross-entropy" if alpha == 0 else f"KD from {cfg.get('teacher', 'the cached teacher')}"
    return finish(
        cfg,
        student,
        out,
        f"Imagewoof train (8686 images, local copy), {what}, tail fine-tuned on cached "
        "frozen-prefix maps",
        command,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Distil a teacher into Lite0 (cached maps).")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = {**load_config(args.config), "config_path": str(args.config)}
        run(cfg, resume=not args.no_resume)
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"distill failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
