"""WiSE-FT: weight-space ensembling of the zero-shot and a fine-tuned network.

``(1 - alpha) * zero-shot + alpha * fine-tuned``, per tensor (Wortsman et al., 2022): keeps
much of the zero-shot network's robustness to new photos that fine-tuning loses. ``alpha`` is
chosen on train photos the fine-tuned run held out (``holdout_every``), never on the test
splits: the highest held-out top-1 wins, ties going to the smaller alpha.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader

from training.lab.data import ImageDataset, Sample
from training.lab.network import BreedClassifier
from training.lab.transforms import EvalTransform
from training.lab.weights import default_preprocessing

log = logging.getLogger(__name__)


def interpolate(zero: BreedClassifier, tuned: BreedClassifier, alpha: float) -> dict:
    """State dict of ``(1 - alpha) * zero + alpha * tuned`` (integer buffers from ``tuned``)."""
    a, b = zero.state_dict(), tuned.state_dict()
    return {k: (1 - alpha) * a[k] + alpha * v if v.is_floating_point() else v for k, v in b.items()}


@torch.no_grad()
def held_out_top1(model: BreedClassifier, photos: list[Sample], arch: str) -> float:
    """Top-1 on ``photos`` through the service preprocessing (eager network)."""
    spec = default_preprocessing(arch, None)
    loader = DataLoader(ImageDataset(photos, EvalTransform(spec)), batch_size=64)
    right = 0
    for images, labels, _ in loader:
        right += int((model(images)[:, :10].argmax(1) == labels).sum())
    return right / len(photos)


def wise_ft(
    zero: BreedClassifier,
    tuned: BreedClassifier,
    alphas: list[float],
    photos: list[Sample],
    arch: str,
) -> tuple[BreedClassifier, dict[str, Any]]:
    """``tuned`` set to the best mix on the held-out ``photos``; facts for the run record."""
    if not photos:
        raise ValueError("WiSE-FT picks alpha on held-out train photos: set holdout_every")
    zero.eval()
    tuned.eval()
    final = {k: v.clone() for k, v in tuned.state_dict().items()}
    scores = {}
    for alpha in sorted(alphas):
        tuned.load_state_dict(interpolate(zero, _loaded(tuned, final), alpha))
        scores[alpha] = held_out_top1(tuned, photos, arch)
        log.info("WiSE-FT alpha %.2f: held-out train top-1 %.4f", alpha, scores[alpha])
    best = max(sorted(scores), key=lambda a: scores[a])  # first (smallest) of ties
    tuned.load_state_dict(interpolate(zero, _loaded(tuned, final), best))
    return tuned, {
        "wise_alpha": best,
        "wise_held_out_top1": {f"{a:g}": round(s, 4) for a, s in scores.items()},
        "wise_held_out_photos": len(photos),
    }


def _loaded(model: BreedClassifier, state: dict) -> BreedClassifier:
    model.load_state_dict(state)
    return model
