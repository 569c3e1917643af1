"""The lab's feedback split: corrections from the service's store (one label per answer, the
latest), deduplicated against the lab's own photos, and read back as a split
(python -m training.feedback)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from model.metadata import IMAGEWOOF_CLASSES
from service.factory import create_app
from service.feedback.store import FeedbackRecord, LocalFeedbackStore, Saved
from tests.support.open_set_fixtures import tiny_dataset
from tests.support.photos import jpeg_bytes
from tests.support.settings import settings_from
from training import feedback as lab
from training.lab.data import LABEL_OF, load_feedback, load_feedback_others, load_split

BEAGLE, SAMOYED = "n02088364", "n02111889"


def _record(answer_id: str, photo: bytes, label: str, at: str) -> FeedbackRecord:
    answer = {"id": answer_id, "breed": None, "verdict": "unknown", "model": {"version": "t"}}
    return FeedbackRecord(answer_id, hashlib.sha256(photo).hexdigest(), label, answer, at)


def _save(
    store: LocalFeedbackStore,
    answer_id: str,
    photo: bytes,
    label: str,
    at: str = "2026-12-01T00:00:00+00:00",
) -> Saved:
    return store.save(_record(answer_id, photo, label, at), photo)


def _png_copy(jpeg: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).resize((48, 48)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture()
def lab_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BREED_CACHE_DIR", str(tmp_path / "cache"))
    return tiny_dataset(tmp_path / "data", n_train=12, n_val=6, n_ood=4)


def test_pull_keeps_new_photos_once_and_drops_the_labs_own(lab_data: Path, tmp_path: Path) -> None:
    store = LocalFeedbackStore(tmp_path / "store")
    beagle, dog_or_cat, tied = (jpeg_bytes(120, 90, seed=s) for s in (1, 2, 3))
    _save(store, "a1", beagle, BEAGLE)
    _save(store, "a2", beagle, BEAGLE)  # the same photo sent again: one photo, two corrections
    _save(store, "a3", dog_or_cat, "none")
    _save(store, "a4", tied, BEAGLE)
    _save(store, "a5", tied, SAMOYED)  # labelled two ways, one vote each: dropped
    train_photo = next((lab_data / "imagewoof" / "train").rglob("*.jpg")).read_bytes()
    _save(store, "a6", train_photo, BEAGLE)  # the lab's own photo, same bytes
    _save(store, "a7", _png_copy(train_photo), BEAGLE)  # ... re-encoded and resized

    assert lab.main(["--store", str(tmp_path / "store"), "--data-dir", str(lab_data)]) == 0
    with (lab_data / "feedback" / "index.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["label"] for r in rows) == [BEAGLE, "none"]
    kept = next(r for r in rows if r["label"] == BEAGLE)
    assert kept["corrections"] == "2" and kept["breed"] == "Beagle"
    assert (lab_data / "feedback" / kept["path"]).read_bytes() == beagle

    samples = load_split(lab_data, "feedback")
    assert [(s.wnid, s.label) for s in samples] == [(BEAGLE, LABEL_OF[BEAGLE])]
    assert [p.read_bytes() for p in load_feedback(lab_data, breeds=False)] == [dog_or_cat]

    before = sorted(p.relative_to(lab_data) for p in (lab_data / "feedback").rglob("*"))
    assert lab.main(["--store", str(tmp_path / "store"), "--data-dir", str(lab_data)]) == 0
    after = sorted(p.relative_to(lab_data) for p in (lab_data / "feedback").rglob("*"))
    assert after == before  # rebuilt whole, the same


def test_another_breed_people_name_is_kept_with_its_wnid(lab_data: Path, tmp_path: Path) -> None:
    """A correction may name any class an answer's looks_like may: it reaches the split under
    its wnid, beside ood/ (not a photo of the ten), and is read back with its wnid."""
    store = LocalFeedbackStore(tmp_path / "store")
    labrador, fox = jpeg_bytes(120, 90, seed=41), jpeg_bytes(120, 90, seed=42)
    _save(store, "l1", labrador, "n02099712")
    _save(store, "l2", fox, "n02119022")
    assert lab.main(["--store", str(tmp_path / "store"), "--data-dir", str(lab_data)]) == 0
    with (lab_data / "feedback" / "index.csv").open(newline="") as handle:
        rows = {r["label"]: r for r in csv.DictReader(handle)}
    assert rows["n02099712"]["breed"] == "Labrador retriever"
    assert rows["n02119022"]["path"].startswith("n02119022/")
    assert load_split(lab_data, "feedback") == []  # none of the ten
    others = load_feedback_others(lab_data)
    assert sorted((p.read_bytes(), wnid) for p, wnid in others) == sorted(
        [(labrador, "n02099712"), (fox, "n02119022")]
    )
    assert sorted(p.read_bytes() for p in load_feedback(lab_data, breeds=False)) == sorted(
        [labrador, fox]
    )


def test_an_answer_counts_once_with_its_latest_label(lab_data: Path, tmp_path: Path) -> None:
    """Relabelled answers (one record, replaced) and stores of the older one-file-per-label
    layout alike: the latest label of each answer is its one vote."""
    store = LocalFeedbackStore(tmp_path / "store")
    changed, legacy = jpeg_bytes(110, 90, seed=11), jpeg_bytes(110, 90, seed=12)
    assert _save(store, "e1", changed, BEAGLE, "2026-12-01T10:00:00+00:00") is Saved.NEW
    assert _save(store, "e1", changed, BEAGLE, "2026-12-01T10:00:05+00:00") is Saved.SAME
    assert _save(store, "e1", changed, SAMOYED, "2026-12-01T10:00:09+00:00") is Saved.REPLACED
    assert [(r.answer_id, r.label) for r in store.records()] == [("e1", SAMOYED)]
    # An answer stored twice under the older layout: records/<id>.<label>.json each.
    (tmp_path / "store" / "photos" / hashlib.sha256(legacy).hexdigest()).write_bytes(legacy)
    for label, at in (
        (SAMOYED, "2026-11-30T09:00:00+00:00"),
        (BEAGLE, "2026-11-30T09:01:00+00:00"),
    ):
        path = tmp_path / "store" / "records" / f"e2.{label}.json"
        path.write_text(_record("e2", legacy, label, at).to_json())

    assert lab.main(["--store", str(tmp_path / "store"), "--data-dir", str(lab_data)]) == 0
    with (lab_data / "feedback" / "index.csv").open(newline="") as handle:
        rows = {r["sha256"]: r for r in csv.DictReader(handle)}
    assert rows[hashlib.sha256(changed).hexdigest()]["label"] == SAMOYED
    assert rows[hashlib.sha256(legacy).hexdigest()]["label"] == BEAGLE  # not a tie: one answer
    assert [r["corrections"] for r in rows.values()] == ["1", "1"]


def test_a_missing_store_is_one_line_and_exit_1(lab_data: Path, tmp_path: Path, capsys) -> None:
    code = lab.main(["--store", str(tmp_path / "nowhere"), "--data-dir", str(lab_data)])
    assert code == 1
    err = capsys.readouterr().err
    assert "no such feedback store" in err and err.count("\n") == 1
    store = LocalFeedbackStore(tmp_path / "store")
    _save(store, "c1", jpeg_bytes(90, 90, seed=4), "none")
    assert lab.main(["--store", str(tmp_path / "store"), "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "deduplicated against" in err and err.count("\n") == 1


def test_a_correction_made_through_the_api_reaches_the_split(
    lab_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Photo → /predict → /feedback → store → python -m training.feedback → split."""
    store = tmp_path / "people"
    env = {"FEEDBACK_URI": str(store), "MODEL_THREADS": "1"}
    client = create_app(settings=settings_from(monkeypatch, env)).test_client()
    photo = jpeg_bytes(320, 240, seed=8)
    answer = client.post("/predict", data=photo, content_type="image/jpeg").get_json()
    first, wnid = IMAGEWOOF_CLASSES[4].wnid, IMAGEWOOF_CLASSES[5].wnid
    sent = client.post("/feedback", data=json.dumps({"id": answer["id"], "label": first}))
    assert sent.status_code == 201
    changed = client.post("/feedback", data=json.dumps({"id": answer["id"], "label": wnid}))
    assert changed.status_code == 201 and changed.get_json()["replaced"] is True

    assert lab.main(["--store", str(store), "--data-dir", str(lab_data)]) == 0
    (sample,) = load_split(lab_data, "feedback")
    assert sample.wnid == wnid
    with Image.open(sample.path) as kept, Image.open(io.BytesIO(photo)) as sent_photo:
        assert kept.format == "JPEG" and kept.size == sent_photo.size  # the private copy
        assert not kept.getexif()


def test_train_with_feedback_adds_the_split_to_the_photos_trained_on(
    lab_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.lab.config import Experiment
    from training.lab.holdout import split_train

    store = LocalFeedbackStore(tmp_path / "store")
    _save(store, "b1", jpeg_bytes(100, 80, seed=9), SAMOYED)
    assert lab.main(["--store", str(tmp_path / "store"), "--data-dir", str(lab_data)]) == 0
    monkeypatch.setenv("BREED_DATA_DIR", str(lab_data))
    base = {"name": "t", "experiment": "t", "arch": "tf_efficientnet_lite0", "loss": "none"}
    plain = split_train(Experiment(**base, holdout_every=3))
    taught = split_train(Experiment(**base, holdout_every=3, train_with_feedback=True))
    assert [s.wnid for s in taught[0][len(plain[0]) :]] == [SAMOYED]
    assert taught[1] == plain[1]  # held-out photos stay Imagewoof train photos
