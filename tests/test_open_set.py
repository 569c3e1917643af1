"""Open-set mechanics on generated data: scorers, the decision, the lab command, --write."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from model.backends import ArtifactError, load_backend
from model.metadata import OpenSetRule, OutputLayout
from model.open_set import SCORERS, is_known, known_scores, logsumexp
from model.predictor import Predictor
from tests.support.open_set_fixtures import (
    CAT_INDEX,
    OTHER_DOG_INDEX,
    coloured_jpeg,
    tiny_artifact,
    tiny_dataset,
    tiny_metadata,
)
from training.lab import open_set_scoring as scoring
from training.lab.cache import weights_fingerprint
from training.release import open_set as lab
from training.release.artifact_metadata import rewrite_metadata

SHIH_TZU = 155  # ImageNet index of the first known breed


def _rows(*peaks: int, height: float = 20.0) -> np.ndarray:
    """Output rows whose ImageNet logits peak at ``peaks`` and breed logits follow them."""
    rows = np.zeros((len(peaks), 1010), dtype=np.float32)
    for r, peak in enumerate(peaks):
        rows[r, 10 + peak] = height
        if peak == SHIH_TZU:
            rows[r, 0] = height
    return rows


def test_imagenet_scorers_refuse_cats_and_other_dogs() -> None:
    outputs = _rows(SHIH_TZU, CAT_INDEX, OTHER_DOG_INDEX)
    for method, params in [
        ("imagenet_breed_mass", {}),
        ("imagenet_breed_mass", {"temperature": 2.0}),
        ("imagenet_breed_margin", {}),
        ("breed_mass_x_softmax", {}),
    ]:
        meta = tiny_metadata(OpenSetRule(method, threshold=0.5, params=params))
        scores = known_scores(outputs, meta)
        assert is_known(scores, meta).tolist() == [True, False, False], method


def test_breed_head_scorers_follow_confidence() -> None:
    outputs = np.zeros((2, 1010), dtype=np.float32)
    outputs[0, :10] = [9, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # confident
    outputs[1, :10] = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # unsure
    for method in ("max_softmax", "max_logit", "energy"):
        scores = known_scores(outputs, tiny_metadata(OpenSetRule(method)))
        assert scores[0] > scores[1], method
    energy = known_scores(outputs, tiny_metadata(OpenSetRule("energy")))
    np.testing.assert_allclose(energy, logsumexp(outputs[:, :10]), rtol=1e-6)


def test_rule_errors_are_explicit() -> None:
    outputs = _rows(SHIH_TZU)
    with pytest.raises(ValueError, match="unknown open-set method"):
        known_scores(outputs, tiny_metadata(OpenSetRule("crystal_ball")))
    with pytest.raises(ValueError, match="temperature"):
        known_scores(outputs, tiny_metadata(OpenSetRule("energy", params={"temperature": 0})))
    no_imagenet = dataclasses.replace(
        tiny_metadata(OpenSetRule("imagenet_breed_mass")), outputs=OutputLayout((0, 10), None)
    )
    with pytest.raises(ValueError, match="ImageNet logits"):
        known_scores(outputs[:, :10], no_imagenet)
    assert scoring.candidates_for(no_imagenet, None) == [
        c for c in scoring.CANDIDATES if c[0] not in scoring.NEEDS_IMAGENET
    ]


class _FixedBackend:
    name = "fixed"

    def __init__(self, meta) -> None:
        self.metadata = meta


def test_predictor_verdict_follows_rule() -> None:
    meta = tiny_metadata(OpenSetRule("imagenet_breed_mass", threshold=0.5))
    predictions = Predictor(_FixedBackend(meta)).interpret(_rows(SHIH_TZU, CAT_INDEX), top_k=3)
    assert predictions[0].known and predictions[0].breed == predictions[0].top_k[0]
    assert predictions[0].breed.name == "Shih-Tzu"
    assert not predictions[1].known and predictions[1].breed is None
    assert len(predictions[1].top_k) == 3  # nearest guesses still listed
    assert predictions[1].to_dict()["breed"] is None
    # No sure threshold (artifacts calibrated before there were three verdicts): known = sure.
    assert [p.verdict for p in predictions] == ["sure", "unknown"]


def test_three_verdicts_from_two_scorers() -> None:
    """Unknown by the ImageNet breed mass; sure by the breed head's confidence."""
    rule = OpenSetRule("imagenet_breed_mass", 0.5, sure_method="max_softmax", sure_threshold=0.9)
    outputs = _rows(SHIH_TZU, SHIH_TZU, CAT_INDEX)
    outputs[1, :10] = [2, 2, 0, 0, 0, 0, 0, 0, 0, 0]  # a Shih-Tzu the breed head doubts
    predictions = Predictor(_FixedBackend(tiny_metadata(rule))).interpret(outputs, top_k=2)
    assert [p.verdict for p in predictions] == ["sure", "unsure", "unknown"]
    unsure = predictions[1]
    assert unsure.known and unsure.breed == unsure.top_k[0]  # an unsure answer names a breed
    assert unsure.to_dict()["verdict"] == "unsure" and unsure.to_dict()["known"] is True
    assert rule.sure_scorer == "max_softmax" and rule.sure_scorer_params == {}
    same = OpenSetRule("energy", 1.0, {"temperature": 2.0}, sure_threshold=3.0)
    assert same.sure_scorer == "energy" and same.sure_scorer_params == {"temperature": 2.0}


def test_every_scorer_is_cheap_and_shaped() -> None:
    outputs = np.random.default_rng(0).standard_normal((5, 1010)).astype(np.float32)
    for method in SCORERS:
        scores = known_scores(outputs, tiny_metadata(OpenSetRule(method)))
        assert scores.shape == (5,) and scores.dtype == np.float32 and np.isfinite(scores).all()


def test_auroc_matches_pairwise_count() -> None:
    rng = np.random.default_rng(1)
    known = rng.integers(0, 6, 40).astype(float)  # many ties
    unknown = rng.integers(0, 4, 30).astype(float)
    pairs = (known[:, None] > unknown[None]).mean() + 0.5 * (known[:, None] == unknown[None]).mean()
    assert scoring.auroc(known, unknown) == pytest.approx(pairs)
    assert scoring.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0


def test_thresholds_refuse_and_admit_the_shares_asked() -> None:
    scores = np.random.default_rng(2).random(1000).astype(np.float32)
    refusing = scoring.refusing_threshold(scores, 0.99)
    assert (scores < refusing).mean() == pytest.approx(0.99, abs=1e-9)
    admitting = scoring.admitting_threshold(scores, 0.05)
    assert (scores >= admitting).mean() == pytest.approx(0.05, abs=1e-9)
    # 0.99 × 100 is 99.00000000000001 in floating point: still 99 photos, not 100.
    hundred = np.arange(100, dtype=np.float32)
    assert (hundred < scoring.refusing_threshold(hundred, 0.99)).sum() == 99


def test_ood_halves_alternate_breeds() -> None:
    sel, held = scoring.split_by_breed(("b", "a", "c", "a", "d"))
    assert sel.tolist() == [False, True, True, True, False]  # a, c selected; b, d held out
    assert (sel ^ held).all()


@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_rewrite_metadata_keeps_weights(tmp_path: Path, suffix: str) -> None:
    path = tiny_artifact(tmp_path / f"tiny{suffix}")
    before_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    before_fp = weights_fingerprint(path)
    batch = np.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(np.float32)
    before = load_backend(path, 1).run(batch)
    rule = OpenSetRule("imagenet_breed_mass", 0.25, {"temperature": 2.0})
    new_meta = dataclasses.replace(tiny_metadata(rule), metrics={"open_set": {"x": 1}})
    rewrite_metadata(path, new_meta)
    backend = load_backend(path, 1)
    assert backend.metadata == new_meta
    np.testing.assert_array_equal(backend.run(batch), before)
    assert hashlib.sha256(path.read_bytes()).hexdigest() != before_sha
    assert weights_fingerprint(path) == before_fp  # the output cache survives a rewrite
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny{suffix}"]


def test_rewrite_refuses_a_different_preprocessing(tmp_path: Path) -> None:
    path = tiny_artifact(tmp_path / "tiny.pt")
    meta = tiny_metadata()
    wrong = dataclasses.replace(
        meta, preprocessing=dataclasses.replace(meta.preprocessing, input_size=8, resize_size=8)
    )
    with pytest.raises(ArtifactError, match="preprocessing"):
        rewrite_metadata(path, wrong)


@pytest.fixture()
def tiny_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("BREED_CACHE_DIR", str(tmp_path / "cache"))
    return {
        "data": tiny_dataset(tmp_path / "data"),
        "out": tmp_path / "results",
        "cache": tmp_path / "cache",
        "tmp": tmp_path,
    }


@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_lab_command_calibrates_and_writes(
    tiny_lab: dict[str, Path], suffix: str, capsys: pytest.CaptureFixture
) -> None:
    artifact = tiny_artifact(tiny_lab["tmp"] / f"tiny{suffix}")
    argv = ["--artifact", str(artifact), "--data-dir", str(tiny_lab["data"])]
    argv += ["--out-dir", str(tiny_lab["out"]), "--write"]
    assert lab.main(argv) == 0
    printed = capsys.readouterr().out
    assert "kept: unknown by" in printed and "AUROC genuine/cats" in printed
    report = (tiny_lab["out"] / "tiny.md").read_text()
    # Two tables of every scorer, one of the verdicts on train, val, cats and dogs.
    assert report.count("\n|") == 2 * (len(scoring.CANDIDATES) + 2) + 4 + 2
    assert (tiny_lab["out"] / "tiny.png").stat().st_size > 1000

    meta = load_backend(artifact, 1).metadata
    assert meta.open_set.method in scoring.NEEDS_IMAGENET  # the 10-way head cannot see cats
    assert meta.open_set.sure_threshold is not None
    figures = meta.metrics["open_set"]
    assert figures["verdicts"]["cats"]["unknown"] == 1.0  # 99% of 12 cats: all of them
    assert figures["verdicts"]["dogs"]["sure"] == 0.0  # at most 5% of 12 dogs: none
    assert figures["verdicts"]["val"]["unknown"] < 0.5
    assert figures["photos"] == {"train": 60, "val": 30, "cats": 12, "dogs": 12}

    predictor = Predictor(load_backend(artifact, 1))
    green = coloured_jpeg(tiny_lab["tmp"] / "g.jpg", "green", seed=77).read_bytes()
    red = coloured_jpeg(tiny_lab["tmp"] / "r.jpg", "red", seed=78).read_bytes()
    assert predictor.predict_bytes(green).known
    cat = predictor.predict_bytes(red)
    assert not cat.known and cat.breed is None

    # Second run: outputs come from the cache (rewriting metadata did not invalidate it).
    cached = sorted(p.name for p in tiny_lab["cache"].rglob("*.npy"))
    assert len(cached) == 4 and not [n for n in cached if ".part" in n]
    assert lab.main(argv[:-1]) == 0
    assert sorted(p.name for p in tiny_lab["cache"].rglob("*.npy")) == cached


def test_lab_command_single_method(tiny_lab: dict[str, Path]) -> None:
    artifact = tiny_artifact(tiny_lab["tmp"] / "tiny.pt")
    argv = ["--artifact", str(artifact), "--data-dir", str(tiny_lab["data"])]
    argv += ["--out-dir", str(tiny_lab["out"]), "--method", "max_softmax", "--write"]
    assert lab.main(argv) == 0
    assert load_backend(artifact, 1).metadata.open_set.method == "max_softmax"


def test_lab_command_on_held_out_train_photos(tiny_lab: dict[str, Path]) -> None:
    artifact = tiny_artifact(tiny_lab["tmp"] / "tiny.pt")
    argv = ["--artifact", str(artifact), "--data-dir", str(tiny_lab["data"]), "--write"]
    argv += ["--out-dir", str(tiny_lab["out"]), "--held-out-every", "4"]
    assert lab.main(argv) == 0
    figures = load_backend(artifact, 1).metadata.metrics["open_set"]
    assert figures["photos"]["train"] == 15
    assert "held out of training (every 4th)" in figures["threshold_rule"]
    assert "--held-out-every 4" in (tiny_lab["out"] / "tiny.md").read_text()


def test_lab_command_fails_with_one_line(tiny_lab: dict[str, Path], capsys) -> None:
    missing = ["--artifact", str(tiny_lab["tmp"] / "nope.pt"), "--data-dir", str(tiny_lab["data"])]
    assert lab.main(missing) == 1
    assert "model artifact not found" in capsys.readouterr().err
    artifact = tiny_artifact(tiny_lab["tmp"] / "tiny.pt")
    no_data = ["--artifact", str(artifact), "--data-dir", str(tiny_lab["tmp"] / "nodata")]
    assert lab.main(no_data) == 1
    err = capsys.readouterr().err.strip()
    assert "index.csv" in err and "\n" not in err


def test_held_out_sets_keep_only_the_photos_a_run_never_trained_on(tmp_path: Path) -> None:
    from training.lab.open_set_data import load_sets

    root = tiny_dataset(tmp_path / "data", n_train=60)
    wnids = [c.wnid for c in tiny_metadata().classes]
    every = load_sets(root, wnids)["train"].paths
    held = load_sets(root, wnids, held_out_every=4)["train"].paths
    assert held == every[3::4] and len(held) == 15
    assert "held out of training (every 4th)" in scoring.rules_text(
        scoring.Rules(genuine="train"), 4
    )
