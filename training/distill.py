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
import json
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


def teacher_logits(names: str | list[str] = "teacher") -> torch.Tensor:
    """Cached teacher breed logits on train, averaged over cached views and over teachers."""
    names = [names] if isinstance(names, str) else names
    return torch.stack(
        [torch.from_numpy(np.array(ArrayCache(n).load("logits"))).mean(dim=1) for n in names]
    ).mean(dim=0)


def _lab_feature_cache(arch: str, n_samples: int) -> Path:
    """The lab's cached trunk outputs (training.engine.cache_features) for ``arch`` on train."""
    from training.engine import cache_dir as lab_cache_dir

    for done in sorted((lab_cache_dir() / "features").glob("*/complete")):
        info = json.loads(done.read_text())
        if info.get("arch") == arch and info.get("samples") == n_samples and info.get("reference"):
            return done.parent
    raise FileNotFoundError(f"no complete lab feature cache for {arch} on {n_samples} images")


@torch.no_grad()
def build_lab_teachers(
    arch: str = "tf_efficientnet_lite2", run_name: str = "lite2_ft", data_root: Path | None = None
) -> list[str]:
    """Teacher caches from the lab's run of ``arch``, at the cost of its tail only.

    The lab's fine-tuning caches, per train image, the frozen trunk's output AND the original
    ImageNet logits of its eval view (``training.engine.cache_features``). The ten breed rows
    of those logits are the zero-shot teacher ("teacher-<arch>-zs"); the lab's fine-tuned tail
    applied to the cached trunk outputs is the fine-tuned teacher ("teacher-<arch>-ft", when
    runs/<run_name>/checkpoint.ckpt exists). Same image order as ``load_split(.., "train")``.
    """
    from model.metadata import IMAGEWOOF_CLASSES
    from training.data import load_split
    from training.engine import TrainNet, build_breed_model, load_checkpoint, split_backbone
    from training.tail import runs_dir

    samples = load_split(data_root, "train")
    folder = _lab_feature_cache(arch, len(samples))
    parts = [torch.load(p, weights_only=True) for p in sorted(folder.glob("part-*.pt"))]
    features = torch.cat([p["features"] for p in parts])
    imagenet = torch.cat([p["imagenet"] for p in parts]).float()
    labels = np.array([s.label for s in samples])
    rows = [c.imagenet_index for c in IMAGEWOOF_CLASSES]
    short = arch.removeprefix("tf_efficientnet_")
    outputs = {f"teacher-{short}-zs": imagenet[:, :, rows].numpy()}
    info = json.loads((folder / "complete").read_text())
    checkpoint = runs_dir() / run_name / "checkpoint.ckpt"  # the lab's (training.train)
    if checkpoint.is_file():
        model = build_breed_model(arch)
        trunk, tail = split_backbone(model.backbone, int(info["trainable_stages"]))
        net = TrainNet(trunk, tail, model, from_features=True)
        net.load_state_dict(load_checkpoint(checkpoint)["net"])
        net.eval()
        n, v = features.shape[:2]
        flat = features.flatten(0, 1)
        logits = torch.cat([net(flat[i : i + 256].float())[0] for i in range(0, len(flat), 256)])
        outputs[f"teacher-{short}-ft"] = logits.unflatten(0, (n, v)).numpy()
    for name, logits in outputs.items():
        cache = ArrayCache(name)
        cache.create(
            len(labels),
            {"logits": (logits.shape[1:], "float32"), "labels": ((), "int64")},
            {"source": str(folder), "run": run_name, "lab_cache": info},
        )
        cache.write(0, {"logits": logits, "labels": labels})
        agree = float((logits.mean(1).argmax(1) == labels).mean())
        log.info("%s: %d images, top-1 on its train view %.4f", name, len(labels), agree)
    return list(outputs)


def run(cfg: dict, resume: bool = True) -> dict:
    command = f"python -m training.distill --config {cfg.get('config_path', '<config>')}"
    split = int(cfg.get("split", SPLIT))
    maps, labels = train_maps(split)
    alpha = float(cfg.get("alpha", 0.0))
    temperature = float(cfg.get("temperature", 1.0))
    lwf = float(cfg.get("lwf", 1.0))
    smoothing = float(cfg.get("label_smoothing", 0.1))
    teacher = teacher_logits(cfg.get("teacher_caches", "teacher")) if alpha > 0 else None
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
    parser.add_argument("--config", type=Path, help="experiment YAML")
    parser.add_argument(
        "--lab-teacher",
        metavar="RUN",
        help="instead: build teacher caches from the lab's run RUN (e.g. lite2_ft) and exit",
    )
    parser.add_argument("--arch", default="tf_efficientnet_lite2", help="with --lab-teacher")
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.lab_teacher:
            build_lab_teachers(args.arch, args.lab_teacher)
            return 0
        if args.config is None:
            raise ValueError("--config is required")
        cfg = {**load_config(args.config), "config_path": str(args.config)}
        run(cfg, resume=not args.no_resume)
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"distill failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
