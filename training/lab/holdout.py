"""Train photos held out of training, so thresholds are set on photos the network never fit.

A network's scores on the photos it trained on are inflated (it memorised them), so an
open-set threshold set on them refuses more new photos than intended. With
``holdout_every: k`` every k-th train photo (index.csv order, i.e. stratified by breed) is
left out of training and used instead to calibrate the run's open-set rule.
"""

from __future__ import annotations

from training.lab.config import Experiment
from training.lab.data import Sample, load_feedback, train_samples


def is_held_out(position: int, every: int) -> bool:
    """Whether the train photo at ``position`` (index.csv order) is held out: every k-th."""
    return position % every == every - 1


def split_train(exp: Experiment) -> tuple[list[Sample], list[Sample]]:
    """(photos to train on, held-out photos); no held-out photos without ``holdout_every``.

    ``train_with_feedback`` adds the feedback split to the photos to train on (never to the
    held-out ones, which calibrate on Imagewoof-like photos).
    """
    photos = train_samples(exp.train_fraction)
    extra = load_feedback() if exp.train_with_feedback else []
    if not exp.holdout_every:
        return photos + extra, []
    held = [is_held_out(i, exp.holdout_every) for i in range(len(photos))]
    return (
        [p for p, h in zip(photos, held, strict=True) if not h] + extra,
        [p for p, h in zip(photos, held, strict=True) if h],
    )
