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

import logging
import os
import random

from locust import FastHttpUser, constant, events, task
from urllib3.filepost import encode_multipart_formdata

from tests.support.photos import generated_photos, load_val_photos

log = logging.getLogger(__name__)

PREDICT_WEIGHT = int(os.environ.get("LOCUST_PREDICT_WEIGHT", "20"))


def load_photos() -> tuple[list[bytes], str]:
    limit = int(os.environ.get("LOCUST_IMAGES", "200"))
    photos = load_val_photos(limit)
    if photos:
        return photos, "Imagewoof val"
    return generated_photos(min(limit, 50)), "generated"


def request_body(photo: bytes, upload: str) -> tuple[bytes, str]:
    """(body, content type) for one photo, built once so the load generator stays cheap."""
    if upload == "raw":
        return photo, "image/jpeg"
    return encode_multipart_formdata({"image": ("dog.jpg", photo, "image/jpeg")})


UPLOAD = os.environ.get("LOCUST_UPLOAD", "multipart")
PHOTOS, PHOTO_SOURCE = load_photos()
BODIES = [request_body(photo, UPLOAD) for photo in PHOTOS]


@events.init.add_listener
def _report_photos(environment, **kwargs) -> None:
    log.info("locust: %d photos from %s, sent as %s", len(BODIES), PHOTO_SOURCE, UPLOAD)


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
