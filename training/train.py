"""Fine-tune a pretrained timm model on Imagewoof from one YAML config, then export + evaluate.

    python -m training.train --config training/configs/lite0_ft.yaml [--resume]
    torchrun --nproc_per_node=2 -m training.train --config ...     # DDP (gloo CPU / nccl GPU)

Freeze policy (``trainable_stages``): 0 = linear probe, N = last N stages + head conv of an
EfficientNet-style model, -1 = full fine-tune. With ``cache_features: true`` the frozen trunk
runs once over the plain and flipped eval views of every training image and training reads
those features (what makes CPU practical); otherwise images are augmented on the fly
(RandomResizedCrop + flip). ``epochs: 0`` exports the untrained model (the zero-shot row).
The original 1000-way ImageNet head stays in the artifact, frozen; ``imagenet_distill`` keeps
its logits close to the original ones (learning without forgetting) for the open-set scorer.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.data import Sample, data_root, fetch_imagewoof, load_split
from training.engine import (
    CachedViews,
    DistContext,
    TrainNet,
    autocast,
    build_breed_model,
    build_optimizer,
    cache_features,
    cleanup_distributed,
    finish_run,
    load_checkpoint,
    make_loader,
    runs_dir,
    save_checkpoint,
    seed_everything,
    setup_distributed,
    split_backbone,
    trainable_parameters,
    warmup_cosine,
)
from training.export import BreedClassifier, breed_metadata, default_preprocessing
from training.transforms import TrainTransform

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """One experiment. Every key may appear in the YAML; unknown keys are an error."""

    name: str
    arch: str = "tf_efficientnet_lite0"
    weights: str = "auto"  # auto | hub | none | path to a checkpoint
    init_checkpoint: str | None = None  # backbone weights of an earlier run (e.g. SSL)
    data: str | None = None  # data root; default $BREED_DATA_DIR or ../shared/data
    download: str | None = None  # "160" | "320" | "full": fetch the fast.ai archive instead
    input_size: int | None = None  # eval/serving size; default: the pretrained size
    train_size: int | None = None  # training resolution; default input_size
    epochs: int = 3
    max_steps: int | None = None  # stop after this many steps (smoke tests)
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.3
    label_smoothing: float = 0.1
    trainable_stages: int = 1  # 0 linear probe, N last N stages, -1 full
    cache_features: bool = True
    flip_view: bool = True  # cache a flipped view too (the only augmentation of cached runs)
    max_train_minutes: float | None = None  # safety stop; a stopped run says so in metrics
    imagenet_distill: float = 0.5  # weight of KL(ImageNet logits || original), 0 = off
    head_init: str = "imagenet_rows"  # imagenet_rows | random
    seed: int = 0
    workers: int = 1
    train_fraction: float = 1.0  # train on every k-th image only (k = 1 / fraction; CPU budget)
    eval_split: str | None = "val"
    eval_limit: int | None = None  # evaluate on the first N images only (smoke tests)
    version: str = "1.0.0"
    onnx: bool = True
    keep_imagenet_head: bool = True
    budget: str = ""  # the compute budget, said in the results table
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: Path) -> TrainConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {unknown}")
        return cls(**raw)


def resolve_data(cfg: TrainConfig) -> tuple[list[Sample], list[Sample] | None]:
    root = fetch_imagewoof(cfg.download) if cfg.download else Path(cfg.data or data_root())
    train = load_split(root, "train")
    if not 0 < cfg.train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {cfg.train_fraction}")
    train = train[:: round(1 / cfg.train_fraction)]  # sorted by class: stays stratified
    evaluation = load_split(root, cfg.eval_split) if cfg.eval_split else None
    if evaluation and cfg.eval_limit:
        evaluation = evaluation[:: max(1, len(evaluation) // cfg.eval_limit)][: cfg.eval_limit]
    return train, evaluation


def train(
    cfg: TrainConfig,
    model: BreedClassifier,
    samples: list[Sample],
    ctx: DistContext,
    run_dir: Path,
    resume: bool,
) -> dict[str, Any]:
    """Train ``model`` in place per ``cfg``; returns a history for metrics.json."""
    spec = default_preprocessing(cfg.arch, cfg.train_size or cfg.input_size)
    trunk, tail = split_backbone(model.backbone, cfg.trainable_stages)
    distill = cfg.imagenet_distill if model.imagenet_head is not None else 0.0
    if cfg.trainable_stages == 0:
        distill = 0.0  # features do not move: nothing to keep
    reference = None
    if distill > 0:
        reference = nn.Sequential(copy.deepcopy(tail), copy.deepcopy(model.imagenet_head))
        reference = reference.eval().requires_grad_(False).to(ctx.device)
    model.to(ctx.device)
    if cfg.cache_features:
        key = {
            "arch": cfg.arch,
            "weights": cfg.weights,
            "init": cfg.init_checkpoint,
            "trainable_stages": cfg.trainable_stages,
            "reference": reference is not None,
        }
        flips = (False, True) if cfg.flip_view else (False,)
        cache = cache_features(
            trunk, reference, samples, spec, key, ctx, workers=cfg.workers, flips=flips
        )
        dataset, workers, reference = CachedViews(cache, cfg.seed + ctx.rank), 0, None
    else:
        dataset, workers = _ImagesWithEmpty(samples, TrainTransform(spec)), cfg.workers
    net = TrainNet(trunk, tail, model, from_features=cfg.cache_features).to(ctx.device)
    loader = make_loader(
        dataset, cfg.batch_size, ctx, shuffle=True, workers=workers, seed=cfg.seed, drop_last=True
    )
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer = build_optimizer(net, cfg.lr, cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, round(cfg.warmup_epochs * steps_per_epoch), total_steps)
    ddp = DistributedDataParallel(net) if ctx.distributed else net
    checkpoint = run_dir / "checkpoint.ckpt"
    start_epoch, step, history, previous_wall = 0, 0, [], 0.0
    stopped_early = False
    if resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        history, previous_wall = state["history"], state["train_wall_s"]
        log.info("resumed %s at epoch %d (step %d)", checkpoint, start_epoch, step)
    if ctx.is_main:
        log.info(
            "training %s: %d trainable params, %d steps/epoch x %d epochs, %s",
            cfg.name,
            trainable_parameters(net),
            steps_per_epoch,
            cfg.epochs,
            "cached features" if cfg.cache_features else "images",
        )
    started = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        if step >= total_steps:
            break
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        ddp.train()
        seen, correct, loss_sum = 0, 0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not ctx.is_main)
        for inputs, labels, ref in bar:
            inputs, labels = inputs.to(ctx.device), labels.to(ctx.device)
            with autocast(ctx.device):
                logits, imagenet = ddp(inputs)
                if reference is not None:  # image mode: original logits computed on the fly
                    with torch.no_grad():
                        ref = reference(net.trunk(inputs))
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
                if distill > 0 and ref.numel():
                    loss = loss + distill * _kd_loss(imagenet.float(), ref.to(ctx.device).float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            seen += len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            loss_sum += loss.item() * len(labels)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            if step >= total_steps:
                break
            over = time.perf_counter() - started > (cfg.max_train_minutes or 1e9) * 60
            if over and not ctx.distributed:  # (a per-rank stop would hang DDP)
                stopped_early = True
                break
        history.append(
            {
                "epoch": epoch + 1,
                "steps": step,
                "loss": loss_sum / seen,
                "train_acc": correct / seen,
            }
        )
        if ctx.is_main:
            log.info("epoch %d: %s", epoch + 1, history[-1])
            wall = previous_wall + time.perf_counter() - started
            save_checkpoint(
                checkpoint,
                {
                    "net": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "history": history,
                    "train_wall_s": wall,
                },
            )
        if stopped_early:
            log.warning(
                "stopped at the %.1f min budget after %d steps", cfg.max_train_minutes, step
            )
            break
    ctx.barrier()
    return {
        "history": history,
        "steps": step,
        "planned_steps": total_steps,
        "stopped_early": stopped_early,
        "trainable_params": trainable_parameters(net),
    }


def _kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    log_p = F.log_softmax(student / temperature, dim=1)
    log_q = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * temperature**2


class _ImagesWithEmpty(torch.utils.data.Dataset):
    """Image samples as (image, label, empty) so both training modes yield triples."""

    def __init__(self, samples: list[Sample], transform: TrainTransform) -> None:
        from training.data import ImageDataset

        self.inner = ImageDataset(samples, transform)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        image, label = self.inner[index]
        return image, label, torch.zeros(0)


def run(cfg: TrainConfig, config_path: Path | None, resume: bool = False) -> dict[str, Any] | None:
    """Train (if epochs > 0), then on rank 0 export + evaluate; returns the metrics there."""
    ctx = setup_distributed()
    seed_everything(cfg.seed)
    run_dir = runs_dir() / cfg.name
    started = time.perf_counter()
    try:
        train_samples, eval_samples = resolve_data(cfg)
        model = build_breed_model(
            cfg.arch, cfg.weights, cfg.init_checkpoint, cfg.head_init, cfg.keep_imagenet_head
        )
        result: dict[str, Any] = {"history": [], "steps": 0}
        if cfg.epochs > 0:
            result = train(cfg, model, train_samples, ctx, run_dir, resume)
        train_wall = time.perf_counter() - started
        if not ctx.is_main:
            return None
        spec = default_preprocessing(cfg.arch, cfg.input_size)
        trained = cfg.epochs > 0
        metadata = breed_metadata(
            name=f"{cfg.arch}-imagewoof-{cfg.name}",
            arch=cfg.arch,
            version=cfg.version,
            preprocessing=spec,
            module=model,
            trained_on=(
                f"Imagewoof train ({len(train_samples)} images"
                f"{'' if cfg.train_fraction == 1 else f', every {round(1 / cfg.train_fraction)}th'}"
                f"), {cfg.epochs} epochs, "
                f"trainable_stages={cfg.trainable_stages}"
                if trained
                else "ImageNet-1k only (no Imagewoof training): the 10 breed rows of its head"
            ),
            weights_origin=f"ImageNet-1k pretrained {cfg.arch} (weights={cfg.weights})"
            + (f", backbone from {cfg.init_checkpoint}" if cfg.init_checkpoint else ""),
            extra={"config": dataclasses.asdict(cfg)},
        )
        command = "python -m training.train --config " + (
            shlex.quote(str(config_path)) if config_path else "<config>"
        )
        info = {
            "run": cfg.name,
            "config": str(config_path) if config_path else None,
            "command": command,
            "world_size": ctx.world_size,
            "epochs": cfg.epochs,
            "trainable_stages": cfg.trainable_stages,
            "cache_features": cfg.cache_features,
            "train_size": cfg.train_size or spec.input_size,
            "train_images": len(train_samples),
            "budget": cfg.budget,
            "notes": cfg.notes,
            "train_wall_s": round(train_wall, 1),
            **result,
        }
        return finish_run(model, metadata, run_dir, eval_samples, info, onnx=cfg.onnx)
    finally:
        cleanup_distributed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune + export + evaluate one experiment.")
    parser.add_argument("--config", type=Path, required=True, help="training/configs/<x>.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = TrainConfig.from_yaml(args.config)
        metrics = run(cfg, args.config, args.resume)
    except Exception as exc:  # CLI: one-line cause, non-zero exit; traceback at DEBUG
        log.debug("train failed", exc_info=True)
        print(f"train failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if metrics and "top1" in metrics:
        print(f"{cfg.name}: val top-1 {metrics['top1']:.2%} top-5 {metrics['top5']:.2%}")
        print("note: ~96% of Imagewoof val are ImageNet-1k train photos (val is optimistic)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
