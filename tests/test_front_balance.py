"""Persistent clients are served by every worker (service/front/asgi.py).

The kernel hands a new connection to whichever worker accepts first and a keep-alive
connection stays there, so several clients that connect at once often all land on one worker
while the other idles. While requests queue for a worker's model, its answers close their
connections, and the clients' next requests spread over the workers.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.gunicorn_server import GunicornServer
from tests.support.photos import jpeg_bytes
from tests.support.server import start_gunicorn

CLIENTS = 8
REQUESTS_EACH = 12
PREDICT_OK = (
    "breedrecognizer_http_requests_total",
    {"route": "/predict", "method": "POST", "status": "200"},
)


@pytest.fixture(scope="module")
def two_workers() -> Iterator[GunicornServer]:
    server = start_gunicorn({"WEB_CONCURRENCY": "2"})
    yield server
    server.stop()


def answered_per_worker(server: GunicornServer) -> list[float]:
    """Each worker's own count of answered /predict requests, read from its metrics file."""
    metrics_dir = Path(re.search(r"metrics in (\S+)", server.logs()).group(1))
    counts = []
    for db in metrics_dir.glob("counter_*.db"):
        with tempfile.TemporaryDirectory() as alone:  # a collector that sees this worker only
            shutil.copy(db, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            counts.append(registry.get_sample_value(*PREDICT_OK) or 0.0)
    return sorted(counts)


def test_keep_alive_clients_are_served_by_both_workers(two_workers: GunicornServer) -> None:
    """Eight clients, each on one persistent session, post at once: each worker answers at
    least a quarter of the photos (without the closes one worker often answers nearly all)."""
    photo = jpeg_bytes(300, 200, seed=1)
    closed = []

    def client(_: int) -> None:
        with requests.Session() as session:
            for _ in range(REQUESTS_EACH):
                closed.append(_post(session, two_workers, photo).get("Connection") == "close")

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    counts = answered_per_worker(two_workers)
    assert len(counts) == 2 and sum(counts) == CLIENTS * REQUESTS_EACH, counts
    assert min(counts) >= sum(counts) / 4, counts
    assert any(closed)  # the spreading came from the closes


def test_a_lone_client_keeps_its_connection(two_workers: GunicornServer) -> None:
    """Nothing queues behind a lone client's photos: its connection stays open."""
    photo = jpeg_bytes(300, 200, seed=2)
    with requests.Session() as session:
        for _ in range(5):
            assert _post(session, two_workers, photo).get("Connection") != "close"


def _post(session: requests.Session, server: GunicornServer, photo: bytes) -> Mapping[str, str]:
    """POST a photo on ``session``; the answer's headers."""
    response = session.post(
        f"{server.base_url}/predict",
        data=photo,
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert response.status_code == 200
    return response.headers
