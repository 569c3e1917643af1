"""Load test for BreedRecognizer: users POST dog photos to /predict and check the answers.

    locust -f locustfile.py --headless -u 4 -r 4 -t 30s --host http://127.0.0.1:8000

Photos come from ``$BREED_DATA_DIR/imagewoof/val`` (default ``../shared/data`` next to the
repo) when present, else generated JPEGs. Settings (environment):
``LOCUST_IMAGES`` photos kept in memory (default 200), ``LOCUST_WAIT_S`` think time between
requests (default 0: a closed loop that measures capacity), ``LOCUST_HEALTHZ_WEIGHT`` how
often a user checks /healthz (default 1) against ``LOCUST_PREDICT_WEIGHT`` predictions
(default 20; 0 leaves a /healthz-only load that measures the HTTP stack alone),
``LOCUST_UPLOAD`` ``multipart`` (field ``image``, as the web page sends it; default) or ``raw``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, task
from urllib3.filepost import encode_multipart_formdata

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent
PREDICT_WEIGHT = int(os.environ.get("LOCUST_PREDICT_WEIGHT", "20"))


def data_dir() -> Path:
    return Path(os.environ.get("BREED_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


def load_val_photos(limit: int, seed: int = 0) -> list[bytes]:
    """Up to ``limit`` Imagewoof val photos, a fixed random sample across the breeds."""
    index = data_dir() / "imagewoof" / "index.csv"
    if not index.is_file():
        return []
    with index.open(newline="") as fh:
        paths = [row["path"] for row in csv.DictReader(fh) if row["split"] == "val"]
    random.Random(seed).shuffle(paths)
    return [(index.parent / p).read_bytes() for p in paths[:limit]]


def generated_photos(count: int, seed: int = 0) -> list[bytes]:
    """Smooth random colour fields saved as JPEG (about the size of the val photos)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((300, 224), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        photos.append(buf.getvalue())
    return photos


def load_photos() -> list[bytes]:
    limit = int(os.environ.get("LOCUST_IMAGES", "200"))
    photos = load_val_photos(limit)
    source = "Imagewoof val"
    if not photos:
        photos, source = generated_photos(min(limit, 50)), "generated"
    log.info("locust: %d photos from %s", len(photos), source)
    return photos


def request_body(photo: bytes, upload: str) -> tuple[bytes, str]:
    """(body, content type) for one photo, built once so the load generator stays cheap."""
    if upload == "raw":
        return photo, "image/jpeg"
    return encode_multipart_formdata({"image": ("dog.jpg", photo, "image/jpeg")})


UPLOAD = os.environ.get("LOCUST_UPLOAD", "multipart")
BODIES = [request_body(photo, UPLOAD) for photo in load_photos()]
HEALTHZ_WEIGHT = int(os.environ.get("LOCUST_HEALTHZ_WEIGHT", "1"))


class PhotoUser(FastHttpUser):
    """One client that sends a photo, waits for the answer, checks it, and repeats."""

    wait_time = constant(float(os.environ.get("LOCUST_WAIT_S", "0")))

    def on_start(self) -> None:
        self.rng = random.Random()

    @task(PREDICT_WEIGHT)
    def predict(self) -> None:
        body, content_type = self.rng.choice(BODIES)
        with self.client.post(
            "/predict",
            data=body,
            headers={"Content-Type": content_type},
            name="/predict",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            try:
                body = response.json()
            except ValueError:
                response.failure("answer is not JSON")
                return
            top_k = body.get("top_k") if isinstance(body, dict) else None
            if not top_k or "name" not in top_k[0]:
                response.failure(f"answer has no top_k: {str(body)[:200]}")

    @task(HEALTHZ_WEIGHT)
    def healthz(self) -> None:
        with self.client.get("/healthz", name="/healthz", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
