"""The input-resolution report: its exact McNemar test, its ship rule and its preprocessing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from model.metadata import Preprocessing
from training.lab.answers import Answers
from training.reports.resolution import (
    RULE,
    Paired,
    mcnemar_exact_p,
    pair,
    scaled_preprocessing,
    verdict,
)


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 0, 1.0),  # no discordant pair: no evidence either way
        (5, 5, 1.0),
        (0, 5, 2 / 32),  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
        (1, 9, 2 * 11 / 1024),  # 2 * (1 + 10) / 2**10
        (6, 1, 2 * 8 / 128),
        (10, 30, 0.002221),  # the textbook figure for 10 vs 30
    ],
)
def test_mcnemar_exact_p_on_known_cases(b: int, c: int, expected: float) -> None:
    assert mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-3)
    assert mcnemar_exact_p(c, b) == pytest.approx(expected, rel=1e-3)  # two-sided: symmetric


@pytest.mark.parametrize(
    ("size", "resize"), [(160, 183), (176, 201), (192, 219), (208, 238), (224, 256)]
)
def test_preprocessing_scales_the_resize_like_224(size: int, resize: int) -> None:
    shipped = Preprocessing(input_size=224, resize_size=256, interpolation="bicubic")
    scaled = scaled_preprocessing(shipped, size)
    assert (scaled.input_size, scaled.resize_size) == (size, resize)
    assert dataclasses.replace(scaled, input_size=224, resize_size=256) == shipped


def _row(split: str, size: int, top1: float | None, unknown: float, p: float = 1.0) -> Paired:
    return Paired(split, size, 100, top1, top1, unknown, 100.0, 100.0, 0, 0, p)


def _figures(**smaller: tuple[float | None, float, float]) -> list[Paired]:
    shipped = {
        "unseen": (90.0, 3.0),
        "web": (95.0, 2.0),
        "cats": (None, 80.0),
        "dogs": (None, 40.0),
    }
    rows = [_row(split, 224, top1, unknown) for split, (top1, unknown) in shipped.items()]
    for split, (top1, unknown) in shipped.items():
        top1, unknown, p = smaller.get(split, (top1, unknown, 1.0))
        rows.append(_row(split, 192, top1, unknown, p))
    return rows


def test_rule_ships_a_smaller_size_that_keeps_everything() -> None:
    assert verdict(_figures(dogs=(None, 39.0, 1.0)), shipped=224) == 192  # 1 pt drop: allowed


@pytest.mark.parametrize(
    "change",
    [
        {"unseen": (89.6, 3.0, 0.9)},  # top-1 lower, even though not significant
        {"web": (96.0, 2.0, 0.03)},  # higher, but the answers differ significantly
        {"cats": (None, 78.9, 1.0)},  # cats "unknown" drops by 1.1 pt
        {"dogs": (None, 38.5, 1.0)},  # other dogs "unknown" drops by 1.5 pt
    ],
)
def test_rule_keeps_224_when_any_condition_fails(change: dict) -> None:
    assert verdict(_figures(**change), shipped=224) == 224


def test_rule_picks_the_smallest_passing_size() -> None:
    rows = _figures()
    rows += [dataclasses.replace(r, size=160) for r in rows if r.size == 224]
    assert verdict(rows, shipped=224) == 160
    assert RULE.min_p == 0.05 and RULE.max_unknown_drop_pt == 1.0


def test_pair_counts_discordant_photos_on_breed_and_on_verdict() -> None:
    def answers(top1: list[int], known: list[bool]) -> Answers:
        ranked = np.array([[t, 1 - t] for t in top1])
        verdict = np.where(np.array(known), "sure", "unknown").astype(object)
        return Answers(ranked, np.full(ranked.shape, 0.5), verdict)

    shipped = answers([0, 0, 1, 1], [True, True, True, False])
    smaller = answers([0, 1, 1, 0], [True, False, True, True])
    labels = np.array([0, 0, 0, 1])
    row = pair("unseen", 192, smaller, shipped, labels)
    assert (row.only_shipped_right, row.only_this_right) == (2, 0)
    assert (row.top1, row.named_right, row.unknown) == (25.0, 25.0, 25.0)
    assert (row.top1_agreement, row.verdict_agreement) == (50.0, 50.0)
    ood = pair("cats", 192, smaller, shipped, None)  # right = "unknown"
    assert (ood.only_shipped_right, ood.only_this_right, ood.top1) == (1, 1, None)


@pytest.mark.data
def test_shipped_artifact_answers_a_real_photo_at_every_size() -> None:
    """The TorchScript artifact takes each measured size (its padding follows the input)."""
    from model.backends import TorchScriptBackend
    from model.preprocessing import preprocess_bytes
    from training.lab.data import DataError, load_split
    from training.reports.resolution import ARTIFACT, SIZES

    try:
        photo = load_split(None, "unseen")[0]
    except (DataError, FileNotFoundError):
        pytest.skip("unseen photos not found (set BREED_DATA_DIR or put them in ../shared/data)")
    backend = TorchScriptBackend(Path(ARTIFACT), threads=1)
    breeds = slice(*backend.metadata.outputs.breed)
    for size in SIZES:
        spec = scaled_preprocessing(backend.metadata.preprocessing, size)
        batch = preprocess_bytes(photo.path.read_bytes(), spec)[None]
        assert batch.shape == (1, 3, size, size)
        logits = backend.run(batch)[0, breeds]
        assert np.isfinite(logits).all() and logits.argmax() == photo.label
