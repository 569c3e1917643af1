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

from model.metadata import IMAGEWOOF_CLASSES
from training.data import ImageDataset, load_split
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
    teacher: torch.Tensor | None,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, kd, ce): Hinton's distillation loss on temperature-softened logits + CE.

    Rows of ``teacher`` that are NaN (images the teacher cache does not cover) get CE only.
    """
    ce_each = F.cross_entropy(student, targets, label_smoothing=label_smoothing, reduction="none")
    ce = ce_each.mean()
    if alpha == 0 or teacher is None:
        return ce, torch.zeros(()), ce
    covered = ~torch.isnan(teacher).any(dim=1)
    if not covered.any():
        return ce, torch.zeros(()), ce
    log_t = F.log_softmax(teacher[covered] / temperature, dim=1)
    log_s = F.log_softmax(student[covered] / temperature, dim=1)
    kd_each = (log_t.exp() * (log_t - log_s)).sum(dim=1) * temperature**2
    total = ce_each.clone()
    total[covered] = alpha * kd_each + (1 - alpha) * ce_each[covered]
    return total.mean(), kd_each.mean(), ce


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


@torch.no_grad()
def build_lab_teachers(
    arch: str = "tf_efficientnet_lite2",
    run_name: str = "lite2_ft",
    data_root: Path | None = None,
    bf16: bool = True,
) -> str:
    """Teacher cache "teacher-<arch short>": per train image, the breed logits of the zero-shot
    ``arch`` (its ImageNet head's ten breed rows) and, when the lab's run ``run_name`` has a
    checkpoint, of the lab's fine-tuned model, both on the lab's eval view of the image.

    One pass of the frozen trunk per image feeds both heads (the lab's fine-tuning only trains
    the tail on top of the same frozen trunk), in bfloat16 with channels-last (about 2x faster
    than float32 on these CPUs). The lab's own feature cache cannot be reused: its Lite2 run
    caches only the 20% of train it trains on. Resumable, in ``load_split(.., "train")`` order.
    """
    from training.engine import TrainNet, build_breed_model, load_checkpoint, split_backbone
    from training.export import default_preprocessing
    from training.tail import _run_cache, runs_dir, threads
    from training.transforms import EvalTransform

    torch.set_num_threads(threads())
    checkpoint = runs_dir() / run_name / "checkpoint.ckpt"  # the lab's (training.train)
    original = build_breed_model(arch)
    trunk, original_tail = split_backbone(original.backbone, 1)
    heads: list[tuple[torch.nn.Module, torch.nn.Module]] = [(original_tail, original.imagenet_head)]
    rows = [c.imagenet_index for c in IMAGEWOOF_CLASSES]
    if checkpoint.is_file():
        tuned = build_breed_model(arch)
        tuned_trunk, tuned_tail = split_backbone(tuned.backbone, 1)
        net = TrainNet(tuned_trunk, tuned_tail, tuned, from_features=True)
        net.load_state_dict(load_checkpoint(checkpoint)["net"])
        heads.append((tuned_tail, tuned.breed_head))
    else:
        log.warning("%s not found: zero-shot teacher only", checkpoint)
    for module in [trunk, *[m for pair in heads for m in pair]]:
        module.eval().to(memory_format=torch.channels_last)

    def logits(images: torch.Tensor) -> dict[str, np.ndarray]:
        x = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            features = trunk(x)
            out = [head(tail(features)).float() for tail, head in heads]
        out[0] = out[0][:, rows]
        return {"logits": torch.stack(out, dim=1).numpy()}

    spec = default_preprocessing(arch)
    name = f"teacher-{arch.removeprefix('tf_efficientnet_')}"
    data = ImageDataset(load_split(data_root, "train"), EvalTransform(spec))
    what = ["zero-shot"] + (["lab " + run_name] if len(heads) > 1 else [])
    cache = _run_cache(
        name,
        data,
        {"logits": ((len(heads), 10), "float32")},
        logits,
        {"arch": arch, "teachers": what, "spec": vars(spec), "bf16": bf16},
        batch_size=32,
    )
    agree = np.array(cache.load("logits")).argmax(2) == np.array(cache.load("labels"))[:, None]
    log.info("%s (%s): top-1 on the train view %s", name, what, agree.mean(0).round(4).tolist())
    return name


@torch.no_grad()
def teacher_from_lab_cache(
    run_name: str = "lite2_ft", data_root: Path | None = None, config: Path | None = None
) -> str:
    """Teacher cache "teacher-<run>" read off the lab run's own feature cache: free, partial.

    The lab's run (``training.train`` with ``cache_features``) stored, for the train images it
    used (every k-th one with ``train_fraction``), its frozen trunk's output and the ORIGINAL
    ImageNet logits of the eval view. Zero-shot teacher = the ten breed rows of those logits;
    fine-tuned teacher = the run's checkpointed tail + breed head on the cached trunk output.
    Images the run did not use get NaN rows (``kd_loss`` gives them CE only). The cache is found
    by recomputing the lab's own cache key, so a stale or different cache is never used.
    """
    import yaml

    from training.data import REPO_ROOT
    from training.engine import (
        TrainNet,
        build_breed_model,
        cache_dir,
        cache_key,
        load_checkpoint,
        runs_dir,
        split_backbone,
    )
    from training.export import default_preprocessing
    from training.tail import ArrayCache

    config = config or REPO_ROOT / "training" / "configs" / f"{run_name}.yaml"
    cfg = yaml.safe_load(Path(config).read_text())
    arch, stages = cfg["arch"], int(cfg.get("trainable_stages", 1))
    samples = load_split(data_root, "train")
    step = round(1 / float(cfg.get("train_fraction", 1.0)))
    used = list(range(0, len(samples), step))
    spec = default_preprocessing(arch, cfg.get("train_size") or cfg.get("input_size"))
    flips = (False, True) if cfg.get("flip_view", True) else (False,)
    parts = {
        "arch": arch,
        "weights": cfg.get("weights", "auto"),
        "init": cfg.get("init_checkpoint"),
        "trainable_stages": stages,
        "reference": float(cfg.get("imagenet_distill", 0.5)) > 0,
    }
    key = cache_key({**parts, "spec": spec, "flips": flips}, [samples[i] for i in used])
    folder = cache_dir() / "features" / key
    if not (folder / "complete").is_file():
        raise FileNotFoundError(f"the lab's feature cache for {run_name} is not at {folder}")
    chunks = [torch.load(p, weights_only=True) for p in sorted(folder.glob("part-*.pt"))]
    features = torch.cat([c["features"] for c in chunks])  # N×V×C×H×W
    imagenet = torch.cat([c["imagenet"] for c in chunks]).float()
    model = build_breed_model(arch)
    trunk, tail = split_backbone(model.backbone, stages)
    net = TrainNet(trunk, tail, model, from_features=True)
    net.load_state_dict(load_checkpoint(runs_dir() / run_name / "checkpoint.ckpt")["net"])
    net.eval()
    flat = features.flatten(0, 1)
    tuned = torch.cat([net(flat[i : i + 128].float())[0] for i in range(0, len(flat), 128)])
    rows = [c.imagenet_index for c in IMAGEWOOF_CLASSES]
    both = torch.stack(
        [imagenet[..., rows].mean(1), tuned.unflatten(0, features.shape[:2]).mean(1)], 1
    )
    logits = np.full((len(samples), 2, 10), np.nan, dtype=np.float32)
    logits[used] = both.numpy()
    labels = np.array([s.label for s in samples])
    name = f"teacher-{run_name}"
    cache = ArrayCache(name)
    shapes = {"logits": ((2, 10), "float32"), "labels": ((), "int64")}
    cache.create(len(samples), shapes, {"run": run_name, "lab_cache": str(folder)})
    cache.write(0, {"logits": logits, "labels": labels})
    agree = (both.argmax(2) == torch.from_numpy(labels[used])[:, None]).float().mean(0)
    log.info(
        "%s: covers %d/%d train images; top-1 there [zero-shot, fine-tuned] %s",
        name,
        len(used),
        len(samples),
        agree.round(decimals=4).tolist(),
    )
    return name


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
        covered = ~torch.isnan(teacher).any(dim=1)
        agree = float((teacher[covered].argmax(1) == labels[covered]).float().mean())
        log.info("teacher covers %d images, top-1 there %.4f", int(covered.sum()), agree)
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
    parser.add_argument(
        "--full-pass",
        action="store_true",
        help="with --lab-teacher: run the teacher trunk over ALL train (~7 min) instead of "
        "reading the lab run's cache (only the images that run used)",
    )
    parser.add_argument("--arch", default="tf_efficientnet_lite2", help="with --full-pass")
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.lab_teacher:
            if args.full_pass:
                build_lab_teachers(args.arch, args.lab_teacher)
            else:
                teacher_from_lab_cache(args.lab_teacher)
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
