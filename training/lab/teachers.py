"""Teacher logits for knowledge distillation, from the lab's own trained runs.

A teacher is a finished run (its checkpoint), optionally averaged with the zero-shot network
of the same architecture (its ImageNet head's ten breed rows).

- ``inputs: cached`` students read a table: per train photo, the teachers' breed logits on
  the views cached for the TEACHER's own training (the same feature cache, found through the
  same key), averaged over views and networks. Photos a teacher did not train on (its
  ``train_fraction``) are NaN rows: they get the CE term only.
- ``inputs: images`` students call the teachers on the very batch they see (same augmented
  view for teacher and student).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from training.lab.config import Experiment, stored_experiment
from training.lab.data import Sample, train_samples
from training.lab.distributed import DistContext
from training.lab.features import feature_maps, train_views
from training.lab.network import build_breed_model, load_run_network, module_digest, split_backbone
from training.lab.weights import default_preprocessing

log = logging.getLogger(__name__)


def _teacher_networks(name: str, zero_shot: bool) -> tuple[list[nn.Module], Experiment]:
    model, config = load_run_network(name)
    exp = stored_experiment(config, f"run {name}")
    nets = [model]
    if zero_shot:
        nets.append(build_breed_model(exp.arch, exp.weights).eval())
    return nets, exp


@torch.no_grad()
def teacher_table(
    names: list[str], zero_shot: bool, samples: list[Sample], ctx: DistContext
) -> torch.Tensor:
    """N×10 teacher breed logits for ``samples`` (NaN rows where no teacher saw the photo)."""
    row_of = {s.path: i for i, s in enumerate(samples)}
    total = torch.zeros(len(samples), 10)
    count = torch.zeros(len(samples), 1)
    for name in names:
        nets, exp = _teacher_networks(name, zero_shot)
        seen = train_samples(exp.train_fraction)
        prefix, _ = split_backbone(nets[0].backbone, exp.trainable_stages)
        views = train_views(exp, default_preprocessing(exp.arch, exp.input_size))
        maps = feature_maps(prefix, seen, views, ctx, exp.precision)
        logits = torch.zeros(len(seen), 10)
        for net in nets:
            net_prefix, tail = split_backbone(net.backbone, exp.trainable_stages)
            if module_digest(net_prefix) != module_digest(prefix):
                raise ValueError(f"teacher {name}: its networks do not share the cached prefix")
            for start in range(0, len(seen), 128):
                flat = maps[start : start + 128].float()
                n, v = flat.shape[:2]
                out = net.breed_head(tail(flat.flatten(0, 1))).unflatten(0, (n, v)).mean(1)
                logits[start : start + n] += out / len(nets)
        rows = torch.tensor([row_of.get(s.path, -1) for s in seen])
        keep = rows >= 0
        total[rows[keep]] += logits[keep]
        count[rows[keep]] += 1
        labels = torch.tensor([s.label for s in seen])
        log.info(
            "teacher %s: top-1 %.4f on the %d photos it covers",
            name,
            float((logits.argmax(1) == labels).float().mean()),
            len(seen),
        )
    table = total / count
    table[count[:, 0] == 0] = float("nan")
    return table


class OnlineTeacher(nn.Module):
    """Mean breed logits of the teacher networks on the student's own batch."""

    def __init__(self, names: list[str], zero_shot: bool) -> None:
        super().__init__()
        nets = [net for name in names for net in _teacher_networks(name, zero_shot)[0]]
        self.nets = nn.ModuleList(nets).eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(images)[:, :10].float() for net in self.nets]).mean(0)
