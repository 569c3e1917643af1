"""The ``looks_like`` rule's one calibrated threshold, set by a rule fixed before any run, and
the figures of the answers under it.

The rule (model/looks_like.py) names the ImageNet head's best class outside the ten when it
is one of the table's, and it outweighs the ten breeds together by a margin:

- ``unknown_margin`` = 0 is fixed by what it means, not fitted: the class named outweighs the
  ten together.
- ``unsure_margin`` ("another breed clearly outweighs the ten") is the lowest margin, and at
  least ``unknown_margin``, at which at most ``genuine_budget`` (0.5%) of the genuine
  calibration photos would carry ``looks_like`` on an ``unsure`` answer. Genuine photos are
  the Imagewoof photos the network never fit: val for a network fine-tuned on all of train,
  else the train photos its run held out (``holdout_every``). Photos of the ten that the
  verdict already refuses (``unknown``) may carry it too, so the budget is kept small.

``unseen`` and ``web`` are never used to set anything; ``ood/`` neither (its figures are
therefore estimates on photos the rule never saw).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.looks_like import OTHER_CLASSES, scores_of
from model.metadata import LooksLikeRule, ModelMetadata
from model.open_set import verdicts
from training.lab.answers import read_answers
from training.lab.ood_breeds import OOD_DOG_CLASSES
from training.lab.open_set_data import PhotoSet

# What the service promises (checked on the report; unseen/web: photos of the ten).
TARGETS = {
    "dogs_named_right": 0.90,  # ood/dogs photos of a breed ImageNet has: that breed named
    "cats_called_cats": 0.90,  # ood/cats: looks_like of kind cat
    "genuine_looks_like_max": 0.03,  # unseen and web: looks_like on photos of the ten
}
LABELLED = ("train", "val", "unseen", "web", "feedback")


@dataclass(frozen=True)
class LooksLikeRules:
    """The calibration rule's parameters and which photos count as genuine held-out."""

    genuine_budget: float = 0.005
    unknown_margin: float = 0.0
    genuine: str = "val"  # "val", or "train" when only held-out train photos are loaded


def calibrated_rule(
    outputs: np.ndarray, meta: ModelMetadata, rules: LooksLikeRules
) -> LooksLikeRule:
    """The artifact's rule with ``unsure_margin`` set on these genuine photos' outputs."""
    scores = scores_of(outputs, meta)
    _, verdict = verdicts(outputs, meta)
    eligible = (verdict == "unsure") & scores.best_outside
    margins = np.sort(scores.margin[eligible].astype(np.float64))[::-1]
    allowed = math.floor(round(rules.genuine_budget * len(outputs), 9))  # may carry it
    threshold = rules.unknown_margin
    if allowed < len(margins):  # the (allowed + 1)-th highest must fall below it
        threshold = max(threshold, float(np.nextafter(margins[allowed], np.inf)))
    return LooksLikeRule(
        method="other_class",
        unknown_margin=rules.unknown_margin,
        unsure_margin=threshold,
    )


def rules_text(rules: LooksLikeRules, held_out_every: int = 0) -> str:
    genuine = (
        f"the Imagewoof train photos held out of training (every {held_out_every}th)"
        if rules.genuine == "train"
        else "Imagewoof val, which the fine-tuning never fit"
    )
    return (
        "unknown answers: the ImageNet head's best class outside the ten, when it is another "
        "dog breed, a wild canid or a cat and outweighs the ten together; unsure answers: the "
        f"same, with the lowest log-odds margin at which at most {rules.genuine_budget:.1%} "
        f"of genuine photos ({genuine}) carry it"
    )


def ood_dog_folder(path: Path) -> str:
    """The breed folder of an ``ood/dogs`` photo (the key of ``OOD_DOG_CLASSES``; a folder
    it lacks counts as a breed ImageNet lacks)."""
    return path.parent.name


def set_figures(
    meta: ModelMetadata, outputs: np.ndarray, photos: PhotoSet
) -> dict[str, float | int]:
    """One set's figures as the service answers it (``read_answers``: the artifact's rule).

    Every set: ``n``, ``looks_like`` (share carrying it), ``plain`` (share carrying it said
    plainly, not with a doubt), ``on_unknown`` / ``on_unsure``
    (share carrying it with that verdict) and the share per kind. Breed photos: ``top1`` and
    ``named_right`` (the right breed named, sure or unsure). ``dogs``: ``mapped`` photos (of a
    breed ImageNet has), ``named_right_mapped`` (their right class named), ``sure_mapped``
    (sure of one of the ten: never carries it), ``best_right_mapped`` (the ImageNet head's
    best other class is right, whatever the verdict and margin: what the rule could name at
    most); ``unmapped`` and ``dog_unmapped`` (called some other dog breed). ``cats``:
    ``best_cat`` (the head's best class of the table is a cat, whatever the verdict).
    """
    answers = read_answers(outputs, meta)
    n = len(outputs)
    named = answers.looks_like
    has = np.array([o is not None for o in named], dtype=bool)
    kinds = Counter(o.kind for o in named if o is not None)
    row: dict[str, float | int] = {"n": n}
    if n == 0:
        return row
    row["looks_like"] = float(has.mean())
    row["plain"] = float(np.mean([o is not None and o.plain for o in named]))
    for verdict in ("unknown", "unsure"):
        row[f"on_{verdict}"] = float((has & (answers.verdict == verdict)).mean())
    for kind in ("dog", "wild", "cat"):
        row[kind] = kinds[kind] / n
    if photos.labels is not None:
        right = answers.top1 == np.asarray(photos.labels)
        row["top1"] = float(right.mean())
        row["named_right"] = float((right & answers.known).mean())
    if photos.name == "cats":
        best_kind = [OTHER_CLASSES[int(i)].kind for i in scores_of(outputs, meta).candidate]
        row["best_cat"] = float(np.mean([k == "cat" for k in best_kind]))
    if photos.name == "dogs":
        wanted = [OOD_DOG_CLASSES.get(ood_dog_folder(p), ()) for p in photos.paths]
        mapped = np.array([bool(w) for w in wanted])
        hit = np.array([o is not None and o.wnid in w for o, w in zip(named, wanted, strict=True)])
        dog = np.array([o is not None and o.kind == "dog" for o in named])
        row["mapped"] = int(mapped.sum())
        if mapped.any():
            best = [OTHER_CLASSES[int(i)].wnid for i in scores_of(outputs, meta).candidate]
            best_hit = np.array([b in w for b, w in zip(best, wanted, strict=True)])
            row["named_right_mapped"] = float(hit[mapped].mean())
            row["sure_mapped"] = float((answers.verdict[mapped] == "sure").mean())
            row["best_right_mapped"] = float(best_hit[mapped].mean())
        row["unmapped"] = int((~mapped).sum())
        if (~mapped).any():
            row["dog_unmapped"] = float(dog[~mapped].mean())
    return row


def dog_breed_rows(meta: ModelMetadata, outputs: np.ndarray, photos: PhotoSet) -> list[dict]:
    """Per ``ood/dogs`` folder: photos, its ImageNet classes, how many named right, and the
    class named most often."""
    answers = read_answers(outputs, meta)
    folders = [ood_dog_folder(p) for p in photos.paths]
    rows = []
    for folder in sorted(set(folders)):
        picked = [o for f, o in zip(folders, answers.looks_like, strict=True) if f == folder]
        wanted = OOD_DOG_CLASSES.get(folder, ())
        names = Counter(o.name for o in picked if o is not None)
        rows.append(
            {
                "folder": folder,
                "photos": len(picked),
                "classes": wanted,
                "named_right": sum(o is not None and o.wnid in wanted for o in picked),
                "carried": sum(o is not None for o in picked),
                "most_named": names.most_common(1)[0][0] if names else "",
            }
        )
    return rows


def targets_missed(figures: dict[str, dict[str, float | int]]) -> list[str]:
    """The promises the figures miss, on the sets present."""
    missed = []
    dogs = figures.get("dogs", {})
    if dogs.get("named_right_mapped", 1.0) < TARGETS["dogs_named_right"]:
        missed.append(f"other breeds named right ≥{TARGETS['dogs_named_right']:.0%}")
    if "cats" in figures and figures["cats"]["cat"] < TARGETS["cats_called_cats"]:
        missed.append(f"cats called cats ≥{TARGETS['cats_called_cats']:.0%}")
    for name in ("unseen", "web"):
        if name in figures and figures[name]["looks_like"] > TARGETS["genuine_looks_like_max"]:
            missed.append(f"{name} looks_like ≤{TARGETS['genuine_looks_like_max']:.0%}")
    return missed
