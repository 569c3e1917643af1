"""End to end: the shipped artifact's calibrated rule, as served by real gunicorn.

A real Imagewoof val photo must come back ``known: true`` with its breed; a real cat photo
from ``ood/cats`` must come back ``known: false`` with ``breed: null`` and the nearest
guesses still listed. Skips cleanly when the shared data folder is absent.
"""

from __future__ import annotations

import pytest
import requests

from model.backends import load_backend
from model.defaults import SHIPPED_MODEL
from model.predictor import Predictor
from service.loading import choose_artifact
from service.settings import ModelSettings
from tests.support.data import data_dir

# Fixed photos (first by path of their folder), not picked by score.
VAL_PHOTOS = {
    "imagewoof/val/n02111889/n02111889_1.jpg": "Samoyed",
    "imagewoof/val/n02099601/n02099601_10.jpg": "Golden retriever",
}
CAT_PHOTOS = ("ood/cats/Abyssinian/Abyssinian_10.jpg", "ood/cats/Bengal/Bengal_10.jpg")
needs_data = pytest.mark.skipif(
    not all((data_dir() / rel).is_file() for rel in [*VAL_PHOTOS, *CAT_PHOTOS]),
    reason=f"shared data absent under {data_dir()} (set BREED_DATA_DIR)",
)


def _photo(rel: str) -> bytes:
    return (data_dir() / rel).read_bytes()


def test_shipped_artifact_carries_a_calibrated_rule() -> None:
    meta = load_backend(SHIPPED_MODEL, threads=1).metadata
    assert meta.open_set.method != "none", (
        "calibrate it: python -m training.release.open_set --write"
    )
    assert meta.open_set.sure_threshold is not None, "three verdicts need a sure threshold"
    figures = meta.metrics["open_set"]
    assert "ood/cats" in figures["threshold_rule"] and "ood/dogs" in figures["threshold_rule"]
    assert {"train", "val", "cats", "dogs"} <= set(figures["verdicts"])
    assert set(figures["verdicts"]["cats"]) == {"sure", "unsure", "unknown"}


@pytest.mark.data
@needs_data
@pytest.mark.parametrize("rel", sorted(VAL_PHOTOS))
def test_predict_val_photo_is_known(base_url: str, rel: str) -> None:
    response = requests.post(f"{base_url}/predict", files={"image": ("dog.jpg", _photo(rel))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["known"] is True
    assert body["breed"]["name"] == VAL_PHOTOS[rel]
    assert body["breed"] == body["top_k"][0]


@pytest.mark.data
@needs_data
@pytest.mark.parametrize("rel", CAT_PHOTOS)
def test_predict_cat_photo_is_not_a_known_breed(base_url: str, rel: str) -> None:
    response = requests.post(f"{base_url}/predict", files={"image": ("cat.jpg", _photo(rel))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["known"] is False
    assert body["breed"] is None
    assert len(body["top_k"]) >= 1  # the nearest guesses are still there


@pytest.mark.data
@needs_data
def test_served_verdict_equals_lab_verdict(base_url: str) -> None:
    """The service and the lab's code path (Predictor on the served artifact) agree."""
    served, _ = choose_artifact(ModelSettings(uri=None, precision="auto"))
    predictor = Predictor(load_backend(served, threads=1))
    for rel in [*VAL_PHOTOS, *CAT_PHOTOS]:
        data = _photo(rel)
        served = requests.post(f"{base_url}/predict", files={"image": ("x.jpg", data)}).json()
        local = predictor.predict_bytes(data)
        assert served["known"] == local.known
        assert served["verdict"] == local.verdict
        assert served["known_score"] == pytest.approx(local.known_score, abs=1e-4)
