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
from training.lab.weights import default_preprocessing

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


class _Run:
    """One fit's state: network, inputs, loss, optimiser, schedule, EMA and where it stands.

    Built in a fixed order (the projector's initialisation draws from torch's generator), so
    a seeded run starts from the same weights every time.
    """

    def __init__(
        self, exp: Experiment, model: BreedClassifier, samples: list[Sample], ctx: DistContext
    ) -> None:
        self.exp, self.model, self.ctx = exp, model, ctx
        self.net = TrainNet(model, exp.trainable_stages, exp.inputs == "cached", exp.train_bn)
        self.net.to(ctx.device)
        self.dataset, teacher = build_inputs(exp, self.net, samples, ctx)
        self.objective = Objective(exp, self.net, teacher).to(ctx.device)
        self.trainable = nn.ModuleDict({"net": self.net})
        if self.objective.projector is not None:
            self.trainable["projector"] = self.objective.projector
        self.optimizer = create_optimizer_v2(
            self.trainable, "adamw", lr=exp.lr, weight_decay=exp.weight_decay
        )
        self.steps, self.per_epoch = planned_steps(exp, len(self.dataset), ctx.world_size)
        warmup = round(exp.warmup_fraction * self.steps)
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer,
            "cosine",
            num_epochs=max(1, self.steps),
            warmup_epochs=warmup,
            warmup_lr=exp.lr / max(1, warmup),
            min_lr=0.0,
        )
        self.path = run_dir(exp.name) / "checkpoint.ckpt"
        self.step, self.wall, self.stopped_early, self.paused = 0, 0.0, False, False
        # Exponential moving average of the weights; it becomes the trained model at the end.
        self.ema = (
            ModelEmaV3(model, decay=exp.ema_decay, use_warmup=True) if exp.ema_decay else None
        )

    def restore(self) -> None:
        """Continue from the run's checkpoint (a full one, or a slim one of a finished run)."""
        state = load_checkpoint(self.path)
        self.model.load_state_dict(state["model"])
        if self.objective.projector is not None:
            self.objective.projector.load_state_dict(state["extra"]["projector"])
        if self.ema is not None:  # a slim checkpoint's weights already are the EMA
            self.ema.module.load_state_dict(state["extra"].get("ema", state["model"]))
        if "optimizer" in state:  # absent from a slim (finished) checkpoint
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.wall = state["step"], state["train_wall_s"]
        self.stopped_early = state["stopped_early"]
        log.info("resumed %s at step %d of %d", self.exp.name, self.step, self.steps)

    def save(self) -> None:
        if not self.ctx.is_main:
            return
        projector = self.objective.projector
        extra = {"projector": projector.state_dict()} if projector else {}
        if self.ema is not None:
            extra["ema"] = self.ema.module.state_dict()
        save_checkpoint(
            self.path,
            {
                "model": self.model.state_dict(),
                "extra": extra,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "train_wall_s": self.wall,
                "stopped_early": self.stopped_early,
                "config": self.exp.model_dump(),
            },
        )

    def loader(self) -> DataLoader:
        """This epoch's batches from the current step on (the same order after a resume)."""
        exp, ctx = self.exp, self.ctx
        sampler = DistributedSampler(
            self.dataset, ctx.world_size, ctx.rank, shuffle=True, seed=exp.seed, drop_last=True
        )
        sampler.set_epoch(self.step // self.per_epoch)
        order = list(sampler)[(self.step % self.per_epoch) * exp.batch_size :]
        return DataLoader(
            self.dataset,
            batch_sampler=BatchSampler(order, exp.batch_size, drop_last=True),
            num_workers=exp.workers if exp.inputs == "images" else 0,
        )

    def train_step(self, ddp: dict[str, nn.Module], batch: dict) -> tuple[torch.Tensor, dict]:
        exp, device = self.exp, self.ctx.device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        generator = torch.Generator().manual_seed(exp.seed * 1_000_003 + self.step)
        self.net.train()
        with autocast(device, exp.precision):
            loss, scalars = self.objective(ddp["net"], ddp.get("projector"), batch, generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        self.scheduler.step(self.step)
        return loss, scalars

    def train(self, max_minutes: float | None) -> None:
        """Steps until the plan is done, the run's budget ends it or ``max_minutes`` pause it."""
        exp = self.exp
        ddp = {
            key: DistributedDataParallel(module, find_unused_parameters=True)
            if self.ctx.distributed
            else module
            for key, module in self.trainable.items()
        }
        started = time.perf_counter()
        bar = tqdm(
            total=self.steps,
            initial=self.step,
            desc=exp.name,
            disable=not self.ctx.is_main,
            mininterval=5,
        )
        while self.step < self.steps and not self.stopped_early and not self.paused:
            for batch in self.loader():
                tick = time.perf_counter()
                loss, scalars = self.train_step(ddp, batch)
                self.wall += time.perf_counter() - tick
                bar.update(1)
                bar.set_postfix(
                    loss=f"{float(loss):.3f}", **{k: f"{v:.3f}" for k, v in scalars.items()}
                )
                elapsed = (time.perf_counter() - started) / 60
                budget = exp.max_train_minutes
                self.stopped_early = bool(budget) and self.wall / 60 > budget
                self.paused = (
                    max_minutes is not None and elapsed > max_minutes and self.step < self.steps
                )
                done = self.step >= self.steps or self.stopped_early or self.paused
                if self.step % CHECKPOINT_EVERY == 0 or done:
                    self.save()
                if done:
                    break
        if self.step == 0 and self.steps == 0:
            self.save()
        bar.close()


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
    run = _Run(exp, model, samples, ctx)
    if resume and run.path.is_file():
        run.restore()
    run.train(max_minutes)
    if run.ema is not None and not run.paused:
        model.load_state_dict(run.ema.module.state_dict())
    ctx.barrier()
    if run.stopped_early:
        log.warning(
            "%s: stopped at the %.1f min budget after %d of %d steps",
            exp.name,
            exp.max_train_minutes,
            run.step,
            run.steps,
        )
    return {
        "finished": not run.paused,
        "steps": run.step,
        "planned_steps": run.steps,
        "stopped_early": run.stopped_early,
        "train_wall_s": round(run.wall, 1),
        "train_photos": len(run.dataset),
        "trainable_params": sum(p.numel() for p in run.trainable.parameters() if p.requires_grad),
    }
