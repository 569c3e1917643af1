"""The one feature cache: frozen-prefix outputs of fixed views of every training photo.

A full Lite0 forward runs at ~20-30 photos/s on the lab's 2 cores, so pushing photos through
the whole network at every step would cost far more than an experiment's budget. With
``inputs: cached`` the frozen prefix runs ONCE per photo and view; training reads the cached
maps (N×V×C×H×W, float16) and runs only the tail. Views: the eval preprocessing at a chosen
size (optionally with its mirror image), or two lightly BYOL views for Barlow Twins. Stored
under ``<cache root>/features/<key>/`` in chunks, so an interrupted caching run resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.metadata import Preprocessing
from training.lab.cache import cache_folder
from training.lab.checkpoint import save_checkpoint
from training.lab.config import Experiment
from training.lab.data import ImageDataset, Sample
from training.lab.distributed import DistContext, autocast
from training.lab.network import module_digest
from training.lab.transforms import EvalViews, PairViews

log = logging.getLogger(__name__)
CHUNK = 1024


@dataclass(frozen=True)
class Views:
    """Which fixed views of each photo are cached: eval crops (± mirror) or BYOL pairs."""

    kind: str  # "eval" | "pairs"
    spec: Preprocessing
    flips: tuple[bool, ...] = (False,)
    seed: int = 0

    def transform(self) -> EvalViews | PairViews:
        if self.kind == "pairs":
            return PairViews(self.spec, self.spec.input_size, self.seed)
        return EvalViews(self.spec, self.flips)


def train_views(exp: Experiment, spec: Preprocessing) -> Views:
    """The supervised view of ``exp``: the eval preprocessing at ``view_size``/``view_resize``."""
    size = exp.view_size or spec.input_size
    resize = exp.view_resize or round(size / 0.875)
    view = dataclasses.replace(spec, input_size=size, resize_size=resize)
    return Views("eval", view, (False, True) if exp.flip_view else (False,))


def pair_views(exp: Experiment, spec: Preprocessing) -> Views:
    size = exp.pair_size
    return Views("pairs", dataclasses.replace(spec, input_size=size, resize_size=size), seed=5)


@torch.no_grad()
def feature_maps(
    prefix: nn.Module,
    samples: list[Sample],
    views: Views,
    ctx: DistContext,
    precision: str = "fp32",
    batch_size: int = 32,
    workers: int = 1,
) -> torch.Tensor:
    """N×V×C×H×W float16 prefix outputs for the views of ``samples`` (computed once, cached)."""
    parts = {
        "prefix": module_digest(prefix),
        "views": dataclasses.asdict(views),
        "dtype": precision,
    }
    folder = cache_folder("features", parts, (s.path for s in samples))
    done = folder / "complete"
    if ctx.is_main and not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        prefix = prefix.eval().to(ctx.device)
        bar = tqdm(total=len(samples), desc=f"caching {views.kind} maps {folder.name}", unit="img")
        for index, start in enumerate(range(0, len(samples), CHUNK)):
            part = folder / f"part-{index:05d}.pt"
            subset = samples[start : start + CHUNK]
            if part.is_file():
                bar.update(len(subset))
                continue
            loader = DataLoader(
                ImageDataset(subset, views.transform()), batch_size=batch_size, num_workers=workers
            )
            maps = []
            for images, _, _ in loader:
                n, v = images.shape[:2]
                flat = images.flatten(0, 1).to(ctx.device)
                with autocast(ctx.device, precision):
                    out = prefix(flat.contiguous(memory_format=torch.channels_last))
                maps.append(out.float().cpu().half().unflatten(0, (n, v)))
                bar.update(n)
            save_checkpoint(part, {"maps": torch.cat(maps)})
        bar.close()
        done.write_text(json.dumps({"photos": len(samples), **parts}, default=str))
    ctx.barrier()
    chunks = sorted(folder.glob("part-*.pt"))
    return torch.cat([torch.load(p, weights_only=True)["maps"] for p in chunks])
