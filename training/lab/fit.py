"""The one fit loop. What varies between experiments is the loss (``Objective``) and the inputs.

- inputs ``cached``: rows of the feature cache; each step draws one cached view per photo,
  a random crop and flip of its maps (seeded by step: a resumed run repeats exactly).
- inputs ``images``: photos augmented on the fly (``TrainTransform``) and run end to end,
  the frozen prefix (if any) under no_grad: full or partial fine-tuning.

AdamW and a warm-up + cosine schedule come from timm's factories; checkpoints are written
atomically every ``CHECKPOINT_EVERY`` steps and on any stop, and ``resume`` continues from the
last one. Under torchrun every process trains its own shard (DDP).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from training.lab.checkpoint import load_checkpoint, save_checkpoint
from training.lab.config import Experiment
from training.lab.data import ImageDataset, Sample
from training.lab.distributed import DistContext, autocast
from training.lab.features import feature_maps, pair_views, train_views
from training.lab.losses import kd_loss, lwf_loss
from training.lab.network import BreedClassifier, TrainNet
from training.lab.paths import run_dir
from training.lab.photo_augment import PhotoTransform
from training.lab.teachers import OnlineTeacher, teacher_table
from training.lab.transforms import TrainTransform
from training.release.export import default_preprocessing

log = logging.getLogger(__name__)
CHECKPOINT_EVERY = 50
SUPERVISED = ("ce", "kd", "joint")
BARLOW_TWINS = ("barlow_twins", "joint")


class CachedRows(Dataset):
    """Photo ``i`` → its cached maps (V×C×H×W), label and, for Barlow Twins, its view pair."""

    def __init__(self, labels: torch.Tensor, maps: torch.Tensor | None, pairs: torch.Tensor | None):
        self.labels, self.maps, self.pairs = labels, maps, pairs

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row: dict[str, Any] = {"y": self.labels[i], "i": i}
        if self.maps is not None:
            row["x"] = self.maps[i]
        if self.pairs is not None:
            row["pairs"] = self.pairs[i]
        return row


class Photos(Dataset):
    """Photo ``i`` → augmented image, label."""

    def __init__(self, samples: list[Sample], transform: TrainTransform) -> None:
        self.inner = ImageDataset(samples, transform)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, label, _ = self.inner[i]
        return {"x": image, "y": label, "i": i}


def augment_maps(
    maps: torch.Tensor, crop: int | None, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """B×V×C×H×W cached maps → B×C×h×w: one random view, random crop, random mirror."""
    n, v, _, h, w = maps.shape
    maps = maps[torch.arange(n), torch.randint(0, v, (n,), generator=generator)].float()
    if crop is not None and crop < min(h, w):
        ys = torch.randint(0, h - crop + 1, (n,), generator=generator)
        xs = torch.randint(0, w - crop + 1, (n,), generator=generator)
        maps = torch.stack(
            [m[:, y : y + crop, x : x + crop] for m, y, x in zip(maps, ys, xs, strict=True)]
        )
    if flip:
        mirrored = torch.rand(n, generator=generator) < 0.5
        maps[mirrored] = maps[mirrored].flip(-1)
    return maps


class Objective(nn.Module):
    """The experiment's loss on one batch: CE / KD (+ LwF), Barlow Twins, or both (joint)."""

    def __init__(self, exp: Experiment, net: TrainNet, teacher: torch.Tensor | nn.Module | None):
        super().__init__()
        self.exp, self.net, self.teacher = exp, net, teacher
        self.original_tail = None
        if exp.lwf > 0 and exp.loss in SUPERVISED:  # the ImageNet logits the run started with
            self.original_tail = copy.deepcopy(net.tail).eval().requires_grad_(False)
        self.projector = None
        if exp.loss in BARLOW_TWINS:  # lightly only where needed: photo runs go without it
            from lightly.loss import BarlowTwinsLoss
            from lightly.models.modules import BarlowTwinsProjectionHead

            width = net.breed_head.in_features
            self.projector = BarlowTwinsProjectionHead(width, exp.projector_dim, exp.projector_dim)
            self.bt_loss = BarlowTwinsLoss(lambda_param=exp.lambda_param)

    def forward(
        self, net: nn.Module, projector: nn.Module | None, batch: dict, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        exp, loss, scalars = self.exp, torch.zeros(()), {}
        if exp.loss in SUPERVISED:
            x = batch["x"]
            maps = augment_maps(x, exp.map_crop, exp.map_flip, gen) if x.dim() == 5 else x
            maps = self.net.maps(maps)
            breed, imagenet, _ = net(maps)
            teacher = None
            if isinstance(self.teacher, torch.Tensor):
                teacher = self.teacher[batch["i"]]
            elif self.teacher is not None:
                teacher = self.teacher(x)
            loss, kd, ce = kd_loss(
                breed.float(), teacher, batch["y"], exp.alpha, exp.temperature, exp.label_smoothing
            )
            scalars.update(ce=float(ce), kd=float(kd))
            if self.original_tail is not None:
                with torch.no_grad():
                    original = self.net.imagenet_head(self.original_tail(maps))
                keep = lwf_loss(imagenet, original, exp.lwf_temperature)
                loss = loss + exp.lwf * keep
                scalars["lwf"] = float(keep)
        if exp.loss in BARLOW_TWINS:
            pairs = batch["pairs"].float()  # B×2×C×H×W: both views in one forward
            _, _, features = net(pairs.flatten(0, 1))
            z = projector(features).float().unflatten(0, pairs.shape[:2])
            with torch.autocast(z.device.type, enabled=False):  # cross-correlation in float32
                bt = self.bt_loss(z[:, 0], z[:, 1])
            loss = loss + (exp.bt_weight if exp.loss == "joint" else 1.0) * bt
            scalars["bt"] = float(bt)
        return loss, scalars


def planned_steps(exp: Experiment, n_photos: int, world_size: int) -> tuple[int, int]:
    """(total steps, steps per epoch) of the experiment on ``n_photos`` photos."""
    per_epoch = max(1, n_photos // (exp.batch_size * world_size))
    if exp.steps is not None:
        return exp.steps, per_epoch
    return round((exp.epochs or 0) * per_epoch), per_epoch


def build_inputs(
    exp: Experiment, net: TrainNet, samples: list[Sample], ctx: DistContext
) -> tuple[Dataset, torch.Tensor | nn.Module | None]:
    """The training set (cached rows or photos) and the teacher (table, network or None)."""
    spec = default_preprocessing(exp.arch, exp.input_size)
    teacher: torch.Tensor | nn.Module | None = None
    if exp.inputs == "images":
        if exp.loss == "kd":
            teacher = OnlineTeacher(exp.teachers, exp.teacher_zero_shot).to(ctx.device)
        augment = PhotoTransform(spec) if exp.augment == "photo" else TrainTransform(spec)
        return Photos(samples, augment), teacher
    labels = torch.tensor([s.label for s in samples])
    maps = pairs = None
    if exp.loss in SUPERVISED:
        maps = feature_maps(net.prefix, samples, train_views(exp, spec), ctx, exp.precision)
    if exp.loss in BARLOW_TWINS:
        pairs = feature_maps(net.prefix, samples, pair_views(exp, spec), ctx, exp.precision)
    if exp.loss == "kd":
        teacher = teacher_table(exp.teachers, exp.teacher_zero_shot, samples, ctx).to(ctx.device)
    return CachedRows(labels, maps, pairs), teacher


def fit(
    exp: Experiment,
    model: BreedClassifier,
    samples: list[Sample],
    ctx: DistContext,
    resume: bool = False,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place; returns the run's training facts (``finished`` False = paused).

    ``max_minutes`` pauses the run (checkpoint saved) so long runs fit short CPU slots; the
    next call with ``resume`` continues. ``exp.max_train_minutes`` instead ENDS the run early.
    """
    net = TrainNet(model, exp.trainable_stages, exp.inputs == "cached", exp.train_bn)
    net.to(ctx.device)
    dataset, teacher = build_inputs(exp, net, samples, ctx)
    objective = Objective(exp, net, teacher).to(ctx.device)
    trainable = nn.ModuleDict({"net": net})
    if objective.projector is not None:
        trainable["projector"] = objective.projector
    optimizer = create_optimizer_v2(trainable, "adamw", lr=exp.lr, weight_decay=exp.weight_decay)
    steps, per_epoch = planned_steps(exp, len(dataset), ctx.world_size)
    warmup = round(exp.warmup_fraction * steps)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        "cosine",
        num_epochs=max(1, steps),
        warmup_epochs=warmup,
        warmup_lr=exp.lr / max(1, warmup),
        min_lr=0.0,
    )
    path = run_dir(exp.name) / "checkpoint.ckpt"
    step, wall, stopped_early = 0, 0.0, False
    # Exponential moving average of the weights; it becomes the trained model at the end.
    ema = ModelEmaV3(model, decay=exp.ema_decay, use_warmup=True) if exp.ema_decay else None
    if resume and path.is_file():
        state = load_checkpoint(path)
        model.load_state_dict(state["model"])
        if objective.projector is not None:
            objective.projector.load_state_dict(state["extra"]["projector"])
        if ema is not None:  # a slim checkpoint's weights already are the EMA
            ema.module.load_state_dict(state["extra"].get("ema", state["model"]))
        if "optimizer" in state:  # absent from a slim (finished) checkpoint
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        step, wall, stopped_early = state["step"], state["train_wall_s"], state["stopped_early"]
        log.info("resumed %s at step %d of %d", exp.name, step, steps)
    ddp = {
        key: DistributedDataParallel(module, find_unused_parameters=True)
        if ctx.distributed
        else module
        for key, module in trainable.items()
    }

    def save() -> None:
        if ctx.is_main:
            extra = {"projector": objective.projector.state_dict()} if objective.projector else {}
            if ema is not None:
                extra["ema"] = ema.module.state_dict()
            save_checkpoint(
                path,
                {
                    "model": model.state_dict(),
                    "extra": extra,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "train_wall_s": wall,
                    "stopped_early": stopped_early,
                    "config": exp.model_dump(),
                },
            )

    started = time.perf_counter()
    bar = tqdm(total=steps, initial=step, desc=exp.name, disable=not ctx.is_main, mininterval=5)
    paused = False
    while step < steps and not stopped_early and not paused:
        sampler = DistributedSampler(
            dataset, ctx.world_size, ctx.rank, shuffle=True, seed=exp.seed, drop_last=True
        )
        sampler.set_epoch(step // per_epoch)
        order = list(sampler)[(step % per_epoch) * exp.batch_size :]
        loader = DataLoader(
            dataset,
            batch_sampler=BatchSampler(order, exp.batch_size, drop_last=True),
            num_workers=exp.workers if exp.inputs == "images" else 0,
        )
        for batch in loader:
            tick = time.perf_counter()
            batch = {k: v.to(ctx.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            generator = torch.Generator().manual_seed(exp.seed * 1_000_003 + step)
            net.train()
            with autocast(ctx.device, exp.precision):
                loss, scalars = objective(ddp["net"], ddp.get("projector"), batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model, step)
            step += 1
            scheduler.step(step)
            wall += time.perf_counter() - tick
            bar.update(1)
            bar.set_postfix(
                loss=f"{float(loss):.3f}", **{k: f"{v:.3f}" for k, v in scalars.items()}
            )
            elapsed = (time.perf_counter() - started) / 60
            stopped_early = bool(exp.max_train_minutes) and wall / 60 > exp.max_train_minutes
            paused = max_minutes is not None and elapsed > max_minutes and step < steps
            if step % CHECKPOINT_EVERY == 0 or step >= steps or stopped_early or paused:
                save()
            if step >= steps or stopped_early or paused:
                break
    if step == 0 and steps == 0:
        save()
    bar.close()
    if ema is not None and not paused:
        model.load_state_dict(ema.module.state_dict())
    ctx.barrier()
    if stopped_early:
        log.warning(
            "%s: stopped at the %.1f min budget after %d of %d steps",
            exp.name,
            exp.max_train_minutes,
            step,
            steps,
        )
    return {
        "finished": not paused,
        "steps": step,
        "planned_steps": steps,
        "stopped_early": stopped_early,
        "train_wall_s": round(wall, 1),
        "train_photos": len(dataset),
        "trainable_params": sum(p.numel() for p in trainable.parameters() if p.requires_grad),
    }
