"""Train photos held out of training, so thresholds are set on photos the network never fit.

A network's scores on the photos it trained on are inflated (it memorised them), so an
open-set threshold set on them refuses more new photos than intended. With
``holdout_every: k`` every k-th train photo (index.csv order, i.e. stratified by breed) is
left out of training and used instead to calibrate the run's open-set rule.
"""

from __future__ import annotations

from training.lab.config import Experiment
from training.lab.data import Sample, train_samples


def is_held_out(position: int, every: int) -> bool:
    """Whether the train photo at ``position`` (index.csv order) is held out: every k-th."""
    return position % every == every - 1


def split_train(exp: Experiment) -> tuple[list[Sample], list[Sample]]:
    """(photos to train on, held-out photos); no held-out photos without ``holdout_every``."""
    photos = train_samples(exp.train_fraction)
    if not exp.holdout_every:
        return photos, []
    held = [is_held_out(i, exp.holdout_every) for i in range(len(photos))]
    return (
        [p for p, h in zip(photos, held, strict=True) if not h],
        [p for p, h in zip(photos, held, strict=True) if h],
    )
