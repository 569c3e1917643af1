"""locustfile.py runs headless against the real service, and the bench summary reads right."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.summary import (
    FP32_MODEL_ONLY,
    INT8_MODEL_ONLY,
    headline,
    write_summary,
)
from tests.support.gunicorn_server import REPO_ROOT, GunicornServer


def _run_locust(
    host: str, prefix: Path, users: int, seconds: int, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess, dict[str, dict[str, str]]]:
    """Run locustfile.py headless against ``host``; return the process and its stats rows."""
    options = f"--headless -u {users} -r {users} -t {seconds}s --only-summary".split()
    locust = [sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "locustfile.py")]
    result = subprocess.run(
        [*locust, *options, "--host", host, "--csv", str(prefix)],
        cwd=prefix.parent,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=90,
    )
    with Path(f"{prefix}_stats.csv").open(newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    return result, rows


def test_locust_runs_against_live_server_without_failures(
    server: GunicornServer, tmp_path: Path
) -> None:
    env = {
        "BREED_DATA_DIR": str(tmp_path / "no-data"),  # generated photos: no data set needed
        "LOCUST_HEALTHZ_WEIGHT": "20",  # as many /healthz as /predict, so both surely run
        "LOCUST_IMAGES": "8",
    }
    result, rows = _run_locust(server.base_url, tmp_path / "run", users=2, seconds=4, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 photos from generated" in result.stderr
    for route in ("/predict", "/healthz"):
        assert int(rows[route]["Request Count"]) > 0
        assert int(rows[route]["Failure Count"]) == 0


def test_locust_reports_bad_answers_as_failures(server: GunicornServer, tmp_path: Path) -> None:
    """The checks are real: /predict?top_k=0 is a 400, which must count as a failure."""
    env = {"BREED_DATA_DIR": str(tmp_path), "LOCUST_IMAGES": "2"}
    result, rows = _run_locust(
        f"{server.base_url}/nothing-here", tmp_path / "bad", users=1, seconds=2, env=env
    )
    assert result.returncode != 0  # locust exits 1 when any request failed
    assert int(rows["/predict"]["Failure Count"]) == int(rows["/predict"]["Request Count"]) > 0


def _row(service: str, users: int, rps: float, **extra: float) -> dict:
    row = {
        "service": service,
        "users": users,
        "seconds": 20,
        "requests": int(rps * 20),
        "failures": 0,
        "rps": rps,
        "p50_ms": 12.0,
        "p95_ms": 20.0,
        "p99_ms": 30.0,
        "avg_ms": 13.0,
        "worker_rss_max_mb": 160.0,
        "server_cpu_ms_per_req": 13.0,
        "locust_cpu_share": 0.1,
        "machine_idle_share": 0.05,
    }
    row.update(extra)
    return row


SERVED = "ours-int8"


def test_summary_headline_and_files(tmp_path: Path) -> None:
    result = {
        "machine": {
            "date": "d",
            "cpu": "cpu",
            "cores": 2,
            "memory_gb": 1.0,
            "python": "3",
            "commit": "c",
            "versions": {"onnxruntime": "1"},
        },
        "served": {"service": SERVED, "precision": "int8", "reason": "auto: made up"},
        "load": [
            _row(SERVED, 1, 140.0, p50_ms=5.5),
            _row(SERVED, 8, 240.0, worker_rss_max_mb=120.0),
            _row(f"{SERVED} /healthz only", 8, 1500.0, server_cpu_ms_per_req=0.5),
            _row("ours-fp32", 8, 150.0),
            _row("naive", 2, 18.0),
            _row("naive", 8, 16.0),
        ],
        "startup": [{"service": SERVED, "cold_start_s": 0.6, "worker_class": "sync"}],
        "stages": [
            {"artifact": "int8", "stage": "model", "median_ms": 4.0},
            {"artifact": "int8", "stage": "total", "median_ms": 6.0},
            {"artifact": "fp32", "stage": "model", "median_ms": 9.0},
        ],
        "model_only": [
            {"what": FP32_MODEL_ONLY, "per_s": 200.0},
            {"what": INT8_MODEL_ONLY, "per_s": 400.0},
        ],
    }
    h = headline(result)
    assert h["rps"] == 240.0 and h["rps_users"] == 8 and h["fp32_rps"] == 150.0
    assert h["naive_rps"] == 18.0 and h["naive_ratio"] == pytest.approx(13.3)
    assert h["p50_1user_ms"] == 5.5 and h["model_only_ratio"] == 1.2  # ÷ the fp32 ceiling
    assert h["own_ratio"] == 0.6 and h["cpu_class"] == "no int8 dot product"
    assert h["rss_mb"] == 160.0 and h["failures"] == 0 and h["worker_class"] == "sync"
    text = write_summary(result, tmp_path)
    assert "| yes |" in text and "**no**" not in text
    assert "| int8 model (ONNX Runtime, 1 thread) | 4.0 |" in text  # int8 stages, not fp32
    assert (tmp_path / "SUMMARY.md").read_text() == text
    with (tmp_path / "load.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6
    json.dumps(result)  # the bench stores the same dict as latest.json


def test_summary_flags_missed_targets(tmp_path: Path) -> None:
    result = {
        "machine": {"date": "d", "cpu": "c", "cores": 2, "memory_gb": 1.0, "python": "3"}
        | {"commit": "c", "versions": {}},
        "served": {"service": SERVED, "precision": "int8", "reason": "auto: made up"},
        "load": [_row(SERVED, 1, 60.0, p50_ms=15.0, failures=1)],
        "startup": [{"service": SERVED, "cold_start_s": 2.5}],
        "stages": [{"artifact": "int8", "stage": "model", "median_ms": 4.0}],
        "model_only": [{"what": FP32_MODEL_ONLY, "per_s": 200.0}],
    }
    text = write_summary(result, tmp_path)
    assert text.count("**no**") == 4  # rps (and failures), ratio, p50, cold start; RSS is met


def test_summary_asks_more_where_the_cpu_has_int8_dot_products(tmp_path: Path) -> None:
    machine = {"date": "d", "cpu": "c", "cores": 2, "memory_gb": 1.0, "python": "3"}
    result = {
        "machine": machine | {"commit": "c", "versions": {}, "cpu_flags": ["avx2"]},
        "served": {"service": SERVED, "precision": "int8", "reason": "auto: made up"},
        "load": [_row(SERVED, 4, 300.0)],
        "startup": [{"service": SERVED, "cold_start_s": 0.5}],
        "stages": [{"artifact": "int8", "stage": "model", "median_ms": 4.0}],
        "model_only": [
            {"what": FP32_MODEL_ONLY, "per_s": 200.0},
            {"what": INT8_MODEL_ONLY, "per_s": 400.0},
        ],
    }
    without = write_summary(result, tmp_path)
    assert "≥ 0.95× on a CPU without int8 dot products) | 1.5×" in without
    assert "own model-only" not in without  # int8 cannot pay there
    result["machine"]["cpu_flags"] = ["avx2", "avx512_vnni"]
    with_dot = write_summary(result, tmp_path)
    assert "≥ 1.60× on a CPU with int8 dot products) | 1.5×" in with_dot
    assert "own model-only ceiling (≥ 0.80×) | 0.75×" in with_dot
    assert with_dot.count("**no**") == 2  # 1.5× < 1.6×, 0.75× < 0.8×
    classes = json.loads((tmp_path / "cpu_classes.json").read_text())
    assert sorted(classes) == ["int8 dot product (avx512_vnni)", "no int8 dot product"]
