"""Whether a static-int8 copy may be served in place of its fp32 original: judged like any model.

The rule (``ACCEPTANCE``, fixed before any int8 copy was measured by it):

Both copies are read as the service answers them (``training.lab.answers``: the artifact's
prior, open-set rule and looks_like rule, each copy with the thresholds calibrated for *it*
from its own outputs, by the same calibration rule and data). On each photo of a criterion's
splits, each copy is either right or wrong:

(a) ``breed_named_right`` on Imagewoof ``unseen`` + ``web`` together: the answer names a
    breed (verdict not ``unknown``) and its top-1 is the photo's breed;
(b) ``cats_unknown`` on ``ood/cats``: the verdict is ``unknown``;
(c) ``other_dogs_not_sure`` on ``ood/dogs`` (65 breeds that are none of the ten): the verdict
    is not ``sure`` (no confident wrong breed).

Each criterion is a paired comparison on the same photos. Only the discordant pairs (photos
where exactly one copy is right) carry information; under "int8 is as good as fp32" each is
equally likely to go either way. The test is the exact one-sided sign test: with ``w`` photos
only int8 gets right and ``l`` only fp32 gets right, p = P(X <= w) for X ~ Binomial(w + l,
1/2). int8 fails the criterion when it loses more discordant pairs than it wins (l > w) with
p < 0.05; it is accepted when it fails none, and every criterion's photos were there. E.g.
0 wins against 8 losses (p = 0.0039) fails; 3 against 5 (p = 0.36) passes.

Agreement with fp32 (same top-1, same verdict, same looks_like) on every split, ``val``
included, is reported as information only: it decides nothing. Outputs come from the lab's
evaluation (``model_outputs``, cached by weights).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.backends import OnnxBackend
from model.metadata import ModelMetadata
from model.precision import cpu_model
from training.lab.answers import Answers, read_answers
from training.lab.data import scan_folder, scan_images
from training.lab.evaluate import model_outputs
from training.timing import time_calls

log = logging.getLogger(__name__)

LABELLED_SPLITS = ("unseen", "web", "val")  # under <data-root>/imagewoof/
OOD_SPLITS = ("cats", "dogs")  # under <data-root>/ood/
SPLITS = (*LABELLED_SPLITS, *OOD_SPLITS)


@dataclass(frozen=True)
class Criterion:
    """One paired comparison: what a copy must get right on each photo of ``splits``."""

    name: str
    right: str  # "named_right", "unknown" or "not_sure" (see ``is_right``)
    splits: tuple[str, ...]
    says: str  # in words, for reports


@dataclass(frozen=True)
class Acceptance:
    """When the int8 copy is accepted: no criterion fails the sign test (module docstring)."""

    criteria: tuple[Criterion, ...] = (
        Criterion(
            "breed_named_right",
            "named_right",
            ("unseen", "web"),
            "right breed named (verdict not unknown, top-1 correct) on unseen + web",
        ),
        Criterion("cats_unknown", "unknown", ("cats",), "said unknown on ood/cats"),
        Criterion("other_dogs_not_sure", "not_sure", ("dogs",), "not answered sure on ood/dogs"),
    )
    test: str = (
        "exact one-sided sign test (binomial, p = 0.5) on the discordant pairs; int8 fails a "
        "criterion when it loses more discordant pairs than it wins with p < alpha"
    )
    alpha: float = 0.05
    thresholds: str = "each copy its own, calibrated by the same rule and data"


ACCEPTANCE = Acceptance()


def sign_test(int8_wins: int, fp32_wins: int) -> float:
    """One-sided exact sign test: P(X <= int8_wins), X ~ Binomial(int8_wins + fp32_wins, 1/2).

    Small when int8 wins few of the discordant pairs; 1.0 when there are none.
    """
    if int8_wins < 0 or fp32_wins < 0:
        raise ValueError("win counts must be >= 0")
    n = int8_wins + fp32_wins
    tail = sum(math.comb(n, k) for k in range(int8_wins + 1))
    return tail / 2**n


def fails(int8_wins: int, fp32_wins: int, alpha: float = ACCEPTANCE.alpha) -> bool:
    """True when int8 loses more discordant pairs than it wins, significantly (p < alpha)."""
    return fp32_wins > int8_wins and sign_test(int8_wins, fp32_wins) < alpha


def is_right(kind: str, answers: Answers, labels: np.ndarray | None) -> np.ndarray:
    """Per photo: does this answer get ``kind`` right (a ``Criterion.right``)?"""
    if kind == "named_right":
        if labels is None:
            raise ValueError("named_right needs the photos' breeds")
        return answers.known & (answers.top1 == labels)
    if kind == "unknown":
        return answers.verdict == "unknown"
    if kind == "not_sure":
        return answers.verdict != "sure"
    raise ValueError(f"no such criterion kind: {kind!r}")


@dataclass
class Paired:
    """One criterion's paired comparison: counts of photos, the sign test and its verdict."""

    criterion: str
    photos: int
    fp32_right: int
    int8_right: int
    int8_only: int  # discordant pairs int8 wins
    fp32_only: int  # discordant pairs fp32 wins
    p_value: float
    passed: bool


def paired(name: str, fp32_right: np.ndarray, int8_right: np.ndarray, alpha: float) -> Paired:
    """The sign test of one criterion on per-photo right/wrong of both copies."""
    if fp32_right.shape != int8_right.shape:
        raise ValueError("both copies must be judged on the same photos")
    int8_only = int((int8_right & ~fp32_right).sum())
    fp32_only = int((fp32_right & ~int8_right).sum())
    return Paired(
        criterion=name,
        photos=len(fp32_right),
        fp32_right=int(fp32_right.sum()),
        int8_right=int(int8_right.sum()),
        int8_only=int8_only,
        fp32_only=fp32_only,
        p_value=round(sign_test(int8_only, fp32_only), 6),
        passed=not fails(int8_only, fp32_only, alpha),
    )


@dataclass
class SplitResult:
    """Information only: fp32 vs int8 on one split, each with its own rules (percentages)."""

    split: str
    photos: int
    fp32_top1: float | None
    int8_top1: float | None
    fp32_named_right: float | None
    int8_named_right: float | None
    top1_agreement: float
    fp32_known: float
    int8_known: float
    fp32_sure: float
    int8_sure: float
    verdict_agreement: float  # sure / unsure / unknown
    looks_like_agreement: float  # the same class named, or none by both


@dataclass
class SplitAnswers:
    """Both copies' answers on one split's photos (labels for Imagewoof splits)."""

    fp32: Answers
    int8: Answers
    labels: np.ndarray | None


def _pct(values: np.ndarray) -> float:
    return round(float(values.mean()) * 100, 2) if len(values) else 0.0


def _looks_like_ids(answers: Answers) -> np.ndarray:
    return np.array([a.wnid if a is not None else "" for a in answers.looks_like], dtype=object)


def split_result(name: str, both: SplitAnswers) -> SplitResult:
    want, got, truth = both.fp32, both.int8, both.labels
    labelled = truth is not None
    return SplitResult(
        split=name,
        photos=len(want.verdict),
        fp32_top1=_pct(want.top1 == truth) if labelled else None,
        int8_top1=_pct(got.top1 == truth) if labelled else None,
        fp32_named_right=_pct(is_right("named_right", want, truth)) if labelled else None,
        int8_named_right=_pct(is_right("named_right", got, truth)) if labelled else None,
        top1_agreement=_pct(want.top1 == got.top1),
        fp32_known=_pct(want.known),
        int8_known=_pct(got.known),
        fp32_sure=_pct(want.verdict == "sure"),
        int8_sure=_pct(got.verdict == "sure"),
        verdict_agreement=_pct(want.verdict == got.verdict),
        looks_like_agreement=_pct(_looks_like_ids(want) == _looks_like_ids(got)),
    )


@dataclass
class Comparison:
    """The acceptance measured: per-criterion sign tests, per-split information."""

    criteria: list[Paired]
    splits: list[SplitResult]
    missing: list[str]  # criteria's splits without photos

    def refusals(self) -> list[str]:
        """Every way the int8 copy falls short of the rule; empty means accepted."""
        problems = [f"no photos for split(s) {self.missing}"] if self.missing else []
        for c in self.criteria:
            if not c.passed:
                problems.append(
                    f"{c.criterion}: int8 alone right on {c.int8_only}, fp32 alone on "
                    f"{c.fp32_only} of {c.photos} photos (one-sided sign test p = "
                    f"{c.p_value:.4g} < {ACCEPTANCE.alpha})"
                )
        return problems


def judge(
    answers: dict[str, SplitAnswers], rule: Acceptance = ACCEPTANCE
) -> tuple[list[Paired], list[str]]:
    """Each criterion whose splits are all present, judged; the missing splits listed."""
    results, missing = [], []
    for criterion in rule.criteria:
        absent = [s for s in criterion.splits if s not in answers]
        if absent:
            missing += [s for s in absent if s not in missing]
            continue
        parts = [answers[s] for s in criterion.splits]
        want = np.concatenate([is_right(criterion.right, p.fp32, p.labels) for p in parts])
        got = np.concatenate([is_right(criterion.right, p.int8, p.labels) for p in parts])
        results.append(paired(criterion.name, want, got, rule.alpha))
    return results, missing


def split_photos(
    data_root: Path, meta: ModelMetadata
) -> dict[str, tuple[list[Path], list[int] | None]]:
    """Photos (and class indices in ``meta.classes``) of the splits present under ``data_root``."""
    index = {c.wnid: i for i, c in enumerate(meta.classes)}
    photos: dict[str, tuple[list[Path], list[int] | None]] = {}
    for split in LABELLED_SPLITS:
        folder = data_root / "imagewoof" / split
        samples = [s for s in scan_folder(folder) if s.wnid in index] if folder.is_dir() else []
        if samples:
            photos[split] = ([s.path for s in samples], [index[s.wnid] for s in samples])
    for split in OOD_SPLITS:
        folder = data_root / "ood" / split
        ood = scan_images(folder) if folder.is_dir() else []
        if ood:
            photos[split] = (ood, None)
    return photos


def compare(
    fp32: Path, int8: Path, data_root: Path, splits: Iterable[str] = (), threads: int = 1
) -> Comparison:
    """fp32 vs int8 artifacts on the splits under ``data_root`` (``splits``: only these).

    Each copy's answers are read under its own metadata (prior, open-set rule, looks_like).
    """
    fp32_backend, int8_backend = OnnxBackend(fp32, threads), OnnxBackend(int8, threads)
    if fp32_backend.metadata.classes != int8_backend.metadata.classes:
        raise ValueError("the two copies name different classes")
    wanted = set(splits) or set(SPLITS)
    answers: dict[str, SplitAnswers] = {}
    for split, (paths, labels) in split_photos(data_root, fp32_backend.metadata).items():
        if split in wanted:
            want = model_outputs(fp32, paths, fp32_backend)
            got = model_outputs(int8, paths, int8_backend)
            answers[split] = SplitAnswers(
                read_answers(want, fp32_backend.metadata),
                read_answers(got, int8_backend.metadata),
                np.asarray(labels) if labels is not None else None,
            )
    criteria, missing = judge(answers)
    results = [split_result(name, both) for name, both in answers.items()]
    for result in results:
        log.info("%s", result)
    return Comparison(criteria, results, missing)


def refusals(comparison: Comparison) -> list[str]:
    """Every way the int8 copy falls short of ``ACCEPTANCE``; empty means accepted."""
    return comparison.refusals()


def comparison_table(comparison: Comparison) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        "criterion             photos  fp32_right  int8_right  int8_only  fp32_only  p_value  pass"
    ]
    for c in comparison.criteria:
        lines.append(
            f"{c.criterion:<21} {c.photos:>6}  {c.fp32_right:>10}  {c.int8_right:>10}  "
            f"{c.int8_only:>9}  {c.fp32_only:>9}  {c.p_value:>7.4f}  {'yes' if c.passed else 'NO'}"
        )
    lines.append("")
    lines.append(
        "split   photos  fp32_top1  int8_top1  fp32_named  int8_named  top1_agree  "
        "verdict_agree  looks_like_agree  (information only)"
    )
    for r in comparison.splits:
        lines.append(
            f"{r.split:<7} {r.photos:>6}  {fmt(r.fp32_top1):>9}  {fmt(r.int8_top1):>9}  "
            f"{fmt(r.fp32_named_right):>10}  {fmt(r.int8_named_right):>10}  "
            f"{fmt(r.top1_agreement):>10}  {fmt(r.verdict_agreement):>13}  "
            f"{fmt(r.looks_like_agreement):>16}"
        )
    return "\n".join(lines)


def model_ms(backend: OnnxBackend, row: np.ndarray, repeats: int = 200) -> float:
    """Median time of one batch-1 run in milliseconds (after a warm-up)."""
    times = time_calls(lambda: backend.run(row), repeats=repeats, warmup=20)
    return round(statistics.median(times) * 1000, 2)


def acceptance_record(comparison: Comparison, rule: Acceptance = ACCEPTANCE) -> dict[str, object]:
    """The rule and its outcome, as ``metrics.int8.acceptance`` and the report keep them."""
    return {
        "rule": {
            "criteria": [dataclasses.asdict(c) for c in rule.criteria],
            "test": rule.test,
            "alpha": rule.alpha,
            "thresholds": rule.thresholds,
        },
        "criteria": [dataclasses.asdict(c) for c in comparison.criteria],
        "missing": comparison.missing,
        "passed": not comparison.refusals(),
    }


def int8_metadata(
    int8: ModelMetadata,
    calibration: dict[str, object],
    comparison: Comparison,
    timing: dict[str, float],
) -> ModelMetadata:
    """``int8`` (the copy's metadata: fp32's, with its own rules) with what was measured."""
    measured = {
        "acceptance": acceptance_record(comparison),
        "splits": {r.split: dataclasses.asdict(r) for r in comparison.splits},
        "model_ms_batch1_1thread": timing,
        "measured_on": f"{cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}",
    }
    metrics = {k: v for k, v in int8.metrics.items() if k != "int8"}
    return dataclasses.replace(
        int8,
        metrics={**metrics, "int8": measured},
        extra={**int8.extra, "quantization": calibration},
    )
