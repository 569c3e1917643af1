"""End to end: POST /predict on 200 Imagewoof val photos (stratified, fixed seed) is ≥ 90% right.

Caveat: ~96% of Imagewoof val are ImageNet-1k *train* photos, so an ImageNet-pretrained
backbone has seen them; this number is optimistic and is a regression check, not a claim.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support.data import imagewoof_dir, stratified_val_sample

SAMPLE_SIZE = 200
MIN_ACCURACY = 0.90

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def val_sample() -> list[tuple[Path, str]]:
    root = imagewoof_dir()
    if root is None:
        pytest.skip("Imagewoof not found at ../shared/data/imagewoof (set BREED_DATA_DIR)")
    return stratified_val_sample(root, SAMPLE_SIZE, seed=0)


def test_predict_accuracy_on_val_sample(base_url: str, val_sample: list[tuple[Path, str]]) -> None:
    def predict(item: tuple[Path, str]) -> bool:
        path, wnid = item
        with path.open("rb") as fh:
            response = requests.post(
                f"{base_url}/predict", files={"image": (path.name, fh)}, timeout=60
            )
        assert response.status_code == 200, response.text
        return response.json()["top_k"][0]["wnid"] == wnid

    with ThreadPoolExecutor(max_workers=2) as pool:  # the fixture server has two workers
        correct = sum(pool.map(predict, val_sample))
    accuracy = correct / len(val_sample)
    print(
        f"\n/predict top-1 on {len(val_sample)} Imagewoof val photos: {accuracy:.1%} "
        "(optimistic: val photos are in ImageNet-1k train)"
    )
    assert accuracy >= MIN_ACCURACY
