"""Whether a static-int8 model may replace its fp32 original: the answers they give compared.

Both models are read the way the service answers (``training.lab.answers``: the artifact's
prior and open-set rule), on ``unseen``, ``web`` and ``val`` (named breed, verdict) and on
``ood`` (verdict), with outputs from the lab's evaluation (``model_outputs``, cached). The
int8 model is accepted only when it keeps what ``ACCEPTANCE`` asks of the fp32 one.
"""

from __future__ import annotations

import dataclasses
import logging
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
from training.lab.answers import read_answers
from training.lab.data import scan_folder, scan_images
from training.lab.evaluate import model_outputs
from training.timing import time_calls

log = logging.getLogger(__name__)

LABELLED_SPLITS = ("unseen", "web", "val")  # under <data-root>/imagewoof/


@dataclass(frozen=True)
class Acceptance:
    """What the int8 artifact must keep of the fp32 one (percentages and percentage points)."""

    min_top1_agreement: float = 99.0  # on unseen + web + val together
    max_top1_drop: float = 0.3  # on unseen and on web, each
    min_verdict_agreement: float = 99.0  # open-set verdicts on unseen, web and ood, each
    drop_splits: tuple[str, ...] = ("unseen", "web")
    verdict_splits: tuple[str, ...] = ("unseen", "web", "ood")


ACCEPTANCE = Acceptance()


@dataclass
class SplitResult:
    """fp32 vs int8 on one split; accuracies only for labelled splits (percentages)."""

    split: str
    photos: int
    fp32_top1: float | None
    int8_top1: float | None
    top1_agreement: float
    fp32_known: float
    int8_known: float
    verdict_agreement: float


def compare_split(
    name: str, fp32: np.ndarray, int8: np.ndarray, meta: ModelMetadata, labels: list[int] | None
) -> SplitResult:
    """One split's figures from both models' output rows, read as the service answers."""
    want, got = read_answers(fp32, meta), read_answers(int8, meta)
    truth = np.asarray(labels) if labels is not None else None

    def pct(values: np.ndarray) -> float:
        return round(float(values.mean()) * 100, 2)

    return SplitResult(
        split=name,
        photos=len(fp32),
        fp32_top1=pct(want.top1 == truth) if truth is not None else None,
        int8_top1=pct(got.top1 == truth) if truth is not None else None,
        top1_agreement=pct(want.top1 == got.top1),
        fp32_known=pct(want.known),
        int8_known=pct(got.known),
        verdict_agreement=pct(want.verdict == got.verdict),  # sure / unsure / unknown
    )


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
    ood = scan_images(data_root / "ood") if (data_root / "ood").is_dir() else []
    if ood:
        photos["ood"] = (ood, None)
    return photos


def compare(
    fp32: Path, int8: Path, data_root: Path, splits: Iterable[str] = (), threads: int = 1
) -> list[SplitResult]:
    """fp32 vs int8 artifacts on the labelled splits and ``ood`` (those under ``data_root``)."""
    fp32_backend, int8_backend = OnnxBackend(fp32, threads), OnnxBackend(int8, threads)
    meta = fp32_backend.metadata
    wanted = set(splits) or {*LABELLED_SPLITS, "ood"}
    results = []
    for split, (paths, labels) in split_photos(data_root, meta).items():
        if split in wanted:
            want = model_outputs(fp32, paths, fp32_backend)
            got = model_outputs(int8, paths, int8_backend)
            results.append(compare_split(split, want, got, meta, labels))
            log.info("%s", results[-1])
    return results


def pooled_agreement(results: list[SplitResult], splits: Iterable[str]) -> float | None:
    chosen = [r for r in results if r.split in set(splits)]
    photos = sum(r.photos for r in chosen)
    if not photos:
        return None
    return round(sum(r.top1_agreement * r.photos for r in chosen) / photos, 2)


def refusals(
    results: list[SplitResult],
    rule: Acceptance = ACCEPTANCE,
    required: Iterable[str] = (*LABELLED_SPLITS, "ood"),
) -> list[str]:
    """Every way the int8 model falls short of ``rule``; empty means accepted.

    A ``required`` split without photos is itself a reason to refuse.
    """
    by_split = {r.split: r for r in results}
    missing = sorted(set(required) - set(by_split))
    problems = [f"no photos for split(s) {missing}"] if missing else []
    agreement = pooled_agreement(results, LABELLED_SPLITS)
    if agreement is not None and agreement < rule.min_top1_agreement:
        problems.append(
            f"top-1 agreement with fp32 on {'+'.join(LABELLED_SPLITS)} is {agreement}% "
            f"< {rule.min_top1_agreement}%"
        )
    for split in rule.drop_splits:
        r = by_split.get(split)
        if r and r.fp32_top1 is not None and r.int8_top1 is not None:
            drop = round(r.fp32_top1 - r.int8_top1, 2)
            if drop > rule.max_top1_drop:
                problems.append(
                    f"top-1 on {split} drops {drop} pt ({r.fp32_top1}% -> {r.int8_top1}%) "
                    f"> {rule.max_top1_drop} pt"
                )
    for split in rule.verdict_splits:
        r = by_split.get(split)
        if r and r.verdict_agreement < rule.min_verdict_agreement:
            problems.append(
                f"open-set verdicts agree on {r.verdict_agreement}% of {split} "
                f"< {rule.min_verdict_agreement}%"
            )
    return problems


def comparison_table(results: list[SplitResult]) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        "split   photos  fp32_top1  int8_top1  top1_agree  fp32_known  int8_known  verdict_agree"
    ]
    for r in results:
        lines.append(
            f"{r.split:<7} {r.photos:>6}  {fmt(r.fp32_top1):>9}  {fmt(r.int8_top1):>9}  "
            f"{fmt(r.top1_agreement):>10}  {fmt(r.fp32_known):>10}  {fmt(r.int8_known):>10}  "
            f"{fmt(r.verdict_agreement):>13}"
        )
    agreement = pooled_agreement(results, LABELLED_SPLITS)
    lines.append(f"top-1 agreement on {'+'.join(LABELLED_SPLITS)}: {fmt(agreement)}%")
    return "\n".join(lines)


def model_ms(backend: OnnxBackend, row: np.ndarray, repeats: int = 200) -> float:
    """Median time of one batch-1 run in milliseconds (after a warm-up)."""
    times = time_calls(lambda: backend.run(row), repeats=repeats, warmup=20)
    return round(statistics.median(times) * 1000, 2)


def int8_metadata(
    fp32: ModelMetadata,
    calibration: dict[str, object],
    results: list[SplitResult],
    timing: dict[str, float],
) -> ModelMetadata:
    measured = {
        "splits": {r.split: dataclasses.asdict(r) for r in results},
        "top1_agreement_unseen_web_val": pooled_agreement(results, LABELLED_SPLITS),
        "acceptance": dataclasses.asdict(ACCEPTANCE),
        "model_ms_batch1_1thread": timing,
        "measured_on": f"{cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}",
    }
    return dataclasses.replace(
        fp32,
        version=f"{fp32.version}+int8",
        metrics={**fp32.metrics, "int8": measured},
        extra={**fp32.extra, "quantization": calibration},
    )
