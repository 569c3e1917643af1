"""The deployment prior: stored in the artifact, applied by the runtime, chosen cross-fitted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from model.backends import load_backend
from model.metadata import ClassPrior, ModelMetadata, OpenSetRule
from model.predictor import Predictor
from tests.support.open_set_fixtures import tiny_artifact, tiny_metadata
from training.release import prior as lab
from training.release.artifact_metadata import rewrite_metadata

BEAGLE, FOXHOUND = 2, 3


def _beagle_or_foxhound(margin: float) -> np.ndarray:
    """One output row whose breed logits favour English foxhound over Beagle by ``margin``."""
    row = np.zeros((1, 1010), dtype=np.float32)
    row[0, BEAGLE], row[0, FOXHOUND] = 5.0, 5.0 + margin
    return row


def test_prior_round_trips_and_must_fit_the_classes() -> None:
    meta = lab.with_shift(tiny_metadata(), BEAGLE, FOXHOUND, 1.0)
    assert meta.prior.log_adjustment[BEAGLE] == 0.5
    assert meta.prior.log_adjustment[FOXHOUND] == -0.5
    assert "Beagle" in meta.prior.source
    assert ModelMetadata.from_json(meta.to_json()) == meta
    assert lab.with_shift(tiny_metadata(), BEAGLE, FOXHOUND, 0.0).prior == ClassPrior()
    with pytest.raises(ValueError, match="3 adjustments for 10 classes"):
        dataclasses.replace(tiny_metadata(), prior=ClassPrior((0.0, 0.0, 0.0)))


def test_runtime_names_the_favoured_breed_and_keeps_the_open_set_verdict() -> None:
    rule = OpenSetRule("max_softmax", threshold=0.45)
    plain = tiny_metadata(rule)
    shifted = lab.with_shift(plain, BEAGLE, FOXHOUND, 1.0)
    row = _beagle_or_foxhound(0.4)  # foxhound slightly ahead: the shift turns it around

    class Fixed:
        def __init__(self, metadata: ModelMetadata) -> None:
            self.metadata, self.name = metadata, "fixed"

        def run(self, batch: np.ndarray) -> np.ndarray:
            return row

    before = Predictor(Fixed(plain)).interpret(row)[0]
    after = Predictor(Fixed(shifted)).interpret(row)[0]
    assert before.top_k[0].name == "English foxhound"
    assert after.top_k[0].name == "Beagle"
    assert after.top_k[0].confidence > before.top_k[1].confidence
    # The verdict reads the model's own probabilities: same score, same decision.
    assert after.known_score == before.known_score
    assert after.known == before.known


def test_shift_is_chosen_cross_fitted_and_ties_go_to_the_smaller_shift() -> None:
    rng = np.random.default_rng(0)
    # Beagle photos that the model leans to call foxhounds by 0..1 logits, and foxhound photos
    # it calls foxhounds by 2 logits: a shift between 1 and 2 fixes the beagles for free.
    beagles = np.concatenate([_beagle_or_foxhound(m) for m in rng.uniform(0, 1, 40)])
    foxes = np.concatenate([_beagle_or_foxhound(2.2) for _ in range(10)])
    outputs = np.concatenate([beagles, foxes])
    labels = np.array([BEAGLE] * 40 + [FOXHOUND] * 10)
    splits = {
        "unseen": lab.SplitData(outputs, labels),
        "web": lab.SplitData(beagles, np.full(40, BEAGLE)),
    }
    choice = lab.choose_shift(splits, tiny_metadata(), BEAGLE, FOXHOUND)
    assert choice["shift"] == 1.0  # the smallest grid shift above every beagle's margin
    assert choice["crossfit_top1"]["web"] > 0.95
    assert choice["crossfit_top1"]["unseen"] > 0.95
    # No beagle/foxhound confusion at all: nothing to gain, no shift.
    clean = {"unseen": lab.SplitData(foxes, np.full(10, FOXHOUND))}
    assert lab.choose_shift(clean, tiny_metadata(), BEAGLE, FOXHOUND)["shift"] == 0.0


def test_write_stores_the_prior_in_the_served_artifact(tmp_path: Path) -> None:
    artifact = tiny_artifact(tmp_path / "tiny.pt")
    meta = lab.with_shift(load_backend(artifact).metadata, BEAGLE, FOXHOUND, 0.75)
    rewrite_metadata(artifact, meta)
    served = Predictor(load_backend(artifact))
    assert served.metadata.prior == meta.prior
    assert served.metadata.prior.log_adjustment[BEAGLE] == 0.375


def test_cli_fails_with_a_one_line_cause(capsys: pytest.CaptureFixture) -> None:
    code = lab.main(["--artifact", "missing.pt", "--favour", "Poodle"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("prior failed:") and "\n" not in err
