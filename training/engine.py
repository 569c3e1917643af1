"""Shared pieces for every training entry point (train.py, and the SSL / joint / KD scripts).

- ``seed_everything``; ``setup_distributed`` (torchrun env → DDP, gloo on CPU / nccl on GPU);
  ``make_loader`` (DistributedSampler when distributed).
- ``build_optimizer`` (AdamW, no decay on norms/biases) + ``warmup_cosine`` schedule;
  ``autocast`` (mixed precision on GPU only).
- ``save_checkpoint`` / ``load_checkpoint`` (atomic, for ``--resume``).
- ``build_breed_model`` (pretrained timm model → ``BreedClassifier`` keeping the ImageNet head)
  and ``split_backbone`` (frozen trunk / trainable tail, for cached features).
- ``cache_features``: trunk outputs (+ the original ImageNet logits) of fixed views, on disk.
- ``finish_run``: export the artifact, evaluate it through the service runtime and write
  ``runs/<name>/metrics.json`` for ``training.results``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import platform
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from model.metadata import IMAGEWOOF_CLASSES, ModelMetadata, Preprocessing
from training.data import REPO_ROOT, ImageDataset, Sample
from training.export import BreedClassifier, export_onnx, export_torchscript, update_metadata
from training.transforms import EvalViews
from training.weights import create_pretrained

log = logging.getLogger(__name__)


def runs_dir() -> Path:
    """Where runs/<name>/ go: $BREED_RUNS_DIR, default <repo>/runs (git-ignored)."""
    return Path(os.environ.get("BREED_RUNS_DIR") or REPO_ROOT / "runs")


def cache_dir() -> Path:
    """Feature caches: $BREED_CACHE_DIR, default <repo>/cache (git-ignored)."""
    return Path(os.environ.get("BREED_CACHE_DIR") or REPO_ROOT / "cache")


VAL_CAVEAT = (
    "~96% of Imagewoof val are ImageNet-1k train photos: ImageNet-pretrained backbones have "
    "seen them, so val accuracy is optimistic"
)


# --- reproducibility and distribution -----------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_distributed() -> DistContext:
    """Read torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK); init DDP if more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        if world_size > 1:  # share the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        log.info("DDP rank %d/%d on %s", rank, world_size, device)
    return DistContext(rank, world_size, local_rank, device)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def make_loader(
    dataset: Dataset,
    batch_size: int,
    ctx: DistContext,
    shuffle: bool,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader; with DDP each rank gets its own shard via DistributedSampler."""
    sampler = None
    if ctx.distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    generator = torch.Generator().manual_seed(seed + ctx.rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        generator=generator,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=workers > 0,
    )


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 mixed precision on GPU; plain fp32 on CPU (CPU autocast is slower for convs here)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- optimisation ---------------------------------------------------------------------------------


def build_optimizer(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over trainable parameters; biases and norm weights (1-D tensors) get no decay."""
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_factor: float = 0.01
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base lr, then cosine decay to ``min_factor`` × lr (per step)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (tmp + rename) so an interrupted save never leaves a broken file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


# --- the model ------------------------------------------------------------------------------------


def build_breed_model(
    arch: str,
    weights: str = "auto",
    init_checkpoint: str | Path | None = None,
    head_init: str = "imagenet_rows",
    keep_imagenet_head: bool = True,
) -> BreedClassifier:
    """Pretrained timm model → BreedClassifier(backbone, new 10-way head, frozen ImageNet head).

    ``init_checkpoint``: backbone weights from an earlier run (e.g. SSL), timm names; a
    ``state_dict``/``backbone`` entry is unwrapped and ``backbone.`` prefixes are removed.
    ``head_init="imagenet_rows"`` starts the breed head from the ten breed rows of the ImageNet
    classifier (the zero-shot model), "random" from timm's default init.
    """
    base = create_pretrained(arch, weights)
    if init_checkpoint:
        load_backbone_weights(base, Path(init_checkpoint))
    imagenet_head = base.get_classifier()
    if not isinstance(imagenet_head, nn.Linear) or imagenet_head.out_features != 1000:
        imagenet_head, head_init = None, "random"  # no usable ImageNet classifier
    else:
        imagenet_head = copy.deepcopy(imagenet_head).requires_grad_(False)
    base.reset_classifier(0)  # base(x) now returns pooled features
    breed_head = nn.Linear(base.num_features, len(IMAGEWOOF_CLASSES))
    if head_init == "imagenet_rows":
        rows = torch.tensor([c.imagenet_index for c in IMAGEWOOF_CLASSES])
        with torch.no_grad():
            breed_head.weight.copy_(imagenet_head.weight[rows])
            breed_head.bias.copy_(imagenet_head.bias[rows])
    return BreedClassifier(base, breed_head, imagenet_head if keep_imagenet_head else None)


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Load backbone tensors from a checkpoint; the classifier may be missing, nothing else."""
    if not path.is_file():
        raise FileNotFoundError(f"init_checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("backbone", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("backbone.").removeprefix("module."): v for k, v in state.items()}
    classifier = {n for n, _ in model.named_parameters() if n.startswith("classifier")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in classifier]
    if missing:
        raise ValueError(f"{path}: backbone tensors missing: {missing[:5]}...")
    log.info("backbone initialised from %s (%d ignored keys)", path, len(unexpected))


def split_backbone(backbone: nn.Module, trainable_stages: int) -> tuple[nn.Module, nn.Module]:
    """(frozen trunk, trainable tail) with ``tail(trunk(x)) == backbone(x)``.

    ``trainable_stages``: 0 = linear probe (tail is empty), -1 = everything trainable (trunk is
    empty), N = the last N stages of an EfficientNet-style timm model (``conv_stem``, ``bn1``,
    ``blocks``, ``conv_head``, ``bn2``) plus its head conv. Trunk and tail share the backbone's
    modules, so training the tail trains the backbone that gets exported.
    """
    if trainable_stages == 0:
        return backbone, nn.Identity()
    if trainable_stages < 0:
        return nn.Identity(), backbone
    names = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")
    if not all(hasattr(backbone, n) for n in names):
        raise ValueError(
            f"{type(backbone).__name__}: partial unfreezing needs an EfficientNet-style timm model;"
            " use trainable_stages 0 (linear probe) or -1 (full fine-tune)"
        )
    blocks = list(backbone.blocks)
    if trainable_stages > len(blocks):
        raise ValueError(f"trainable_stages={trainable_stages} but the model has {len(blocks)}")
    cut = len(blocks) - trainable_stages
    trunk = nn.Sequential(backbone.conv_stem, backbone.bn1, *blocks[:cut])
    tail = nn.Sequential(*blocks[cut:], backbone.conv_head, backbone.bn2, backbone.global_pool)
    return trunk, tail


class TrainNet(nn.Module):
    """What the optimiser sees: (frozen trunk) → tail → (breed logits, ImageNet logits | None).

    ``from_features=True`` when batches are cached trunk outputs instead of images.
    """

    def __init__(
        self, trunk: nn.Module, tail: nn.Module, model: BreedClassifier, from_features: bool
    ) -> None:
        super().__init__()
        self.trunk = trunk.requires_grad_(False)
        self.tail = tail
        self.breed_head = model.breed_head
        self.imagenet_head = model.imagenet_head
        self.from_features = from_features

    def train(self, mode: bool = True) -> TrainNet:
        super().train(mode)
        self.trunk.eval()  # frozen BN statistics stay frozen
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.from_features:
            with torch.no_grad():
                x = self.trunk(x)
        features = self.tail(x)
        imagenet = self.imagenet_head(features) if self.imagenet_head is not None else None
        return self.breed_head(features), imagenet


def trainable_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- cached features --------------------------------------------------------------------------


@dataclass
class FeatureCache:
    """Trunk outputs of fixed views (N×V×C×H×W, fp16), labels, original ImageNet logits."""

    features: torch.Tensor
    labels: torch.Tensor
    imagenet_logits: torch.Tensor | None


def cache_key(parts: dict[str, Any], samples: list[Sample]) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for sample in samples:
        digest.update(f"{sample.path}|{sample.label}\n".encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def cache_features(
    trunk: nn.Module,
    reference: nn.Module | None,
    samples: list[Sample],
    spec: Preprocessing,
    key_parts: dict[str, Any],
    ctx: DistContext,
    batch_size: int = 64,
    workers: int = 1,
    chunk: int = 1024,
    flips: tuple[bool, ...] = (False, True),
) -> FeatureCache:
    """Compute (or load) trunk features of the eval-preprocessed views of every sample.

    ``reference`` maps trunk outputs to the ORIGINAL ImageNet logits (frozen copy of tail +
    ImageNet head), kept to regularise the tail (learning without forgetting). Stored in
    chunks under cache/features/<key>/, so an interrupted caching run resumes. Rank 0
    computes; other ranks wait and load.
    """
    key = cache_key({**key_parts, "spec": spec, "flips": flips}, samples)
    folder = cache_dir() / "features" / key
    done = folder / "complete"
    if ctx.is_main and not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        trunk = trunk.to(ctx.device).eval()
        views = EvalViews(spec, flips)
        starts = range(0, len(samples), chunk)
        bar = tqdm(total=len(samples), desc=f"caching features {key}", unit="img")
        for index, start in enumerate(starts):
            part = folder / f"part-{index:05d}.pt"
            subset = samples[start : start + chunk]
            if part.is_file():
                bar.update(len(subset))
                continue
            dataset = ImageDataset(subset, views)
            loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
            feats, logits = [], []
            for images, _ in loader:
                n, v = images.shape[:2]
                with autocast(ctx.device):
                    out = trunk(images.flatten(0, 1).to(ctx.device))
                    if reference is not None:
                        ref = reference(out).float().cpu().unflatten(0, (n, v))
                        logits.append(ref.half())
                feats.append(out.float().cpu().half().unflatten(0, (n, v)))
                bar.update(n)
            ref_logits = torch.cat(logits) if logits else None
            save_checkpoint(part, {"features": torch.cat(feats), "imagenet": ref_logits})
        bar.close()
        done.write_text(json.dumps({"samples": len(samples), **key_parts}, default=str))
    ctx.barrier()
    parts = [torch.load(p, weights_only=True) for p in sorted(folder.glob("part-*.pt"))]
    has_logits = all(p["imagenet"] is not None for p in parts)
    return FeatureCache(
        features=torch.cat([p["features"] for p in parts]),
        labels=torch.tensor([s.label for s in samples]),
        imagenet_logits=torch.cat([p["imagenet"] for p in parts]) if has_logits else None,
    )


class CachedViews(Dataset):
    """One random cached view per sample per draw → (features fp32, label, ImageNet logits)."""

    def __init__(self, cache: FeatureCache, seed: int = 0) -> None:
        self.cache = cache
        self.generator = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.cache.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        view = int(self.generator.integers(self.cache.features.shape[1]))
        logits = self.cache.imagenet_logits
        ref = logits[index, view].float() if logits is not None else torch.zeros(0)
        return self.cache.features[index, view].float(), int(self.cache.labels[index]), ref


# --- end of a run -------------------------------------------------------------------------------


def hardware() -> str:
    """A one-line description of where this ran (CPU model + cores, or the GPUs)."""
    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return f"{torch.cuda.device_count()}x {', '.join(sorted(names))}"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"CPU {cpu}, {os.cpu_count()} cores"


def finish_run(
    model: BreedClassifier,
    metadata: ModelMetadata,
    run_dir: Path,
    eval_samples: list[Sample] | None,
    info: dict[str, Any],
    onnx: bool = True,
    eval_batch_size: int = 64,
) -> dict[str, Any]:
    """Export the artifact (TorchScript, + ONNX), evaluate it as served, write metrics.json.

    ``info`` is merged into metrics.json; the results table reads: name, arch, config,
    command, train_wall_s, budget. Evaluation loads the exported ``model.pt`` through
    ``model.predictor``: the numbers are those of the artifact, not of the eager model.
    """
    from training.evaluate import evaluate_artifact

    run_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    artifact = export_torchscript(model, metadata, run_dir / "model.pt")
    metrics: dict[str, Any] = {
        "name": metadata.name,
        "arch": metadata.architecture,
        "artifact": str(artifact),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "hardware": hardware(),
        "torch": torch.__version__,
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "preprocessing": vars(metadata.preprocessing),
        **info,
    }
    if eval_samples:
        started = time.perf_counter()
        evaluation = evaluate_artifact(artifact, eval_samples, run_dir, batch_size=eval_batch_size)
        metrics.update(evaluation)
        metrics["eval_wall_s"] = round(time.perf_counter() - started, 1)
        metrics["caveat"] = VAL_CAVEAT
        summary = {k: evaluation.get(k) for k in ("top1", "top5", "n_images", "split")}
        metadata = update_metadata(artifact, {**summary, "caveat": VAL_CAVEAT})
    if onnx:
        export_onnx(model, metadata, run_dir / "model.onnx")
    metrics["size_mb"] = round(artifact.stat().st_size / 1e6, 2)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    log.info("run %s: %s", run_dir.name, {k: metrics.get(k) for k in ("top1", "top5", "size_mb")})
    return metrics


def iterate_forever(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader
