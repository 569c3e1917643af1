"""The front under real gunicorn and real sockets: slow clients, body deadlines, size limits.

The server runs two workers (one per core), as in production, with short body deadlines so
the checks finish in reasonable time.
"""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from service.front.body import Body, MemoryBudget
from tests.support.gunicorn_server import GunicornServer
from tests.support.photos import jpeg_bytes
from tests.support.server import start_gunicorn
from tests.support.slow_clients import check_slow_clients, raise_fd_limit

BODY_TIMEOUT_S = 10
BODY_IDLE_TIMEOUT_S = 6
TRICKLERS = 64


@pytest.fixture(scope="module")
def front_server() -> Iterator[GunicornServer]:
    server = start_gunicorn(
        {
            "WEB_CONCURRENCY": "2",
            "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
            "BODY_IDLE_TIMEOUT_S": str(BODY_IDLE_TIMEOUT_S),
            "MAX_UPLOAD_MB": "1",
        }
    )
    yield server
    server.stop()


def _worker_pids(logs: str) -> set[str]:
    return set(re.findall(r"Booting worker with pid: (\d+)", logs))


def _raw_upload(server: GunicornServer, body: bytes, declared: int) -> socket.socket:
    """An upload that has sent its headers and ``body`` so far (of ``declared`` bytes)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
        f"Connection: close\r\nContent-Length: {declared}\r\n\r\n".encode()
        + body
    )
    return sock


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_trickling_uploads_do_not_slow_down_other_clients(front_server: GunicornServer) -> None:
    """64 uploads at one byte every 3 s for 40 s; a normal client posts a photo every second."""
    if not raise_fd_limit(TRICKLERS + 256):
        pytest.skip(f"the open-file limit is too low for {TRICKLERS} connections")
    workers_before = _worker_pids(front_server.logs())
    report = check_slow_clients(
        front_server.base_url,
        photo=jpeg_bytes(800, 600, seed=5),
        connections=TRICKLERS,
        trickle_interval_s=3.0,
        duration_s=40.0,
        normal_interval_s=1.0,
        max_latency_s=2.0,
        # The deadline, plus one trickle interval of scheduling slack on a loaded machine.
        cut_off_within_s=BODY_TIMEOUT_S + 3.0,
    )
    print(report.summary())
    assert len(report.normal) >= 35
    # Each trickle was answered with a 408 (not merely dropped), and the server logged them.
    answered = [t for t in report.trickles if t.ended == "answered"]
    assert len(answered) >= 0.9 * len([t for t in report.trickles if t.ended != "open"])
    assert {t.status for t in answered} == {408}
    assert len(report.trickles) >= 2 * TRICKLERS  # cut off and replaced, again and again
    logs = front_server.logs()
    assert logs.count("-> 408 body_timeout") >= len(answered)
    # No worker was killed or replaced while this went on.
    assert _worker_pids(logs) == workers_before
    for sign in ("WORKER TIMEOUT", "SIGKILL", "Worker exiting"):
        assert sign not in logs


def test_a_silent_client_is_cut_off_with_a_logged_408(front_server: GunicornServer) -> None:
    photo = jpeg_bytes(seed=6)
    sock = _raw_upload(front_server, photo[:100], len(photo))
    started = time.monotonic()
    response = _read_response(sock)
    waited = time.monotonic() - started
    sock.close()
    assert response.startswith(b"HTTP/1.1 408 "), response[:200]
    assert b'"code": "request_timeout"' in response
    assert b"no body data for 6 s" in response
    assert BODY_IDLE_TIMEOUT_S - 0.5 <= waited <= BODY_IDLE_TIMEOUT_S + 3
    assert "-> 408 body_timeout: no body data for 6 s" in front_server.logs()


def test_upload_limit_is_enforced_while_reading(front_server: GunicornServer) -> None:
    """A chunked upload (no Content-Length) past MAX_UPLOAD_MB: 413 from the front."""
    before = front_server.logs().count("-> 413 too_large")

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"\xff" * 64 * 1024  # 2.5 MB in all, over the 1 MB limit

    response = requests.post(
        f"{front_server.base_url}/predict",
        data=chunks(),
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "the limit is 1 MB" in response.json()["error"]["message"]
    assert front_server.logs().count("-> 413 too_large") == before + 1


def test_a_complete_upload_after_a_slow_start_is_answered(front_server: GunicornServer) -> None:
    """Slow but steady is fine: bytes arriving within the deadlines reach the model."""
    photo = jpeg_bytes(seed=7)
    sock = _raw_upload(front_server, photo[:1000], len(photo))
    time.sleep(1.0)  # a pause shorter than the idle deadline (the point of the test)
    sock.sendall(photo[1000:])
    response = _read_response(sock)
    sock.close()
    assert response.startswith(b"HTTP/1.1 200 "), response[:300]
    assert b'"top_k"' in response


PREDICT_OK = (
    "breedrecognizer_http_requests_total",
    {"route": "/predict", "method": "POST", "status": "200"},
)


def _predict_ok_per_worker(server: GunicornServer) -> dict[str, float]:
    """Each worker's own count of answered /predict requests, read from its metrics file."""
    metrics_dir = Path(re.search(r"metrics in (\S+)", server.logs()).group(1))
    counts = {}
    for db in metrics_dir.glob("counter_*.db"):
        with tempfile.TemporaryDirectory() as alone:  # a collector that sees this worker only
            shutil.copy(db, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            counts[db.stem.removeprefix("counter_")] = registry.get_sample_value(*PREDICT_OK) or 0.0
    return counts


def _predict_ok_total(server: GunicornServer) -> float:
    """The count of answered /predict requests that GET /metrics reports."""
    name, labels = PREDICT_OK
    text = requests.get(f"{server.base_url}/metrics", timeout=10).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    return sum(s.value for s in samples if s.name == name and s.labels == labels)


def test_front_metrics_add_up_across_workers(front_server: GunicornServer) -> None:
    """/metrics reports the sum of both workers' counters: as many requests as were sent."""
    text = requests.get(f"{front_server.base_url}/metrics", timeout=10).text
    refused = re.findall(r'breedrecognizer_front_refused_total\{reason="(\w+)"\} (\S+)', text)
    assert dict(refused).get("body_timeout") is not None
    before_total, before = _predict_ok_total(front_server), _predict_ok_per_worker(front_server)
    photo, sent = jpeg_bytes(seed=8), 0
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):  # rounds of 8 at once, until both workers have answered some
            statuses = list(pool.map(lambda _: _post(front_server, photo), range(8)))
            assert statuses == [200] * 8
            sent += 8
            after = _predict_ok_per_worker(front_server)
            served = {pid for pid, n in after.items() if n > before.get(pid, 0.0)}
            if len(served) == 2:
                break
    assert len(served) == 2, after
    added = {pid: n - before.get(pid, 0.0) for pid, n in after.items()}
    assert sum(added.values()) == sent, added
    assert _predict_ok_total(front_server) - before_total == sent


def _post(server: GunicornServer, photo: bytes) -> int:
    return requests.post(
        f"{server.base_url}/predict",
        data=photo,
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    ).status_code


def test_bodies_beyond_the_memory_budget_go_to_disk() -> None:
    budget = MemoryBudget(1000)
    first, second = Body(budget), Body(budget)
    first.write(b"a" * 600)
    second.write(b"b" * 300)
    second.write(b"c" * 300)  # 1200 > 1000: the second body moves to a temporary file
    assert not first.on_disk and second.on_disk
    assert budget.used_bytes == 600
    second.file.seek(0)
    assert second.file.read() == b"b" * 300 + b"c" * 300
    assert second.size == 600
    first.close()
    second.close()
    assert budget.used_bytes == 0
