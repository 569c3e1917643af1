"""The pure parts of the OpenVINO benchmark: the keep rule, answer agreement, the report."""

from __future__ import annotations

import pytest

from benchmarks.openvino import (
    REFERENCE,
    RULE,
    agreement,
    is_kept,
    openvino_config,
    render,
    verdicts,
)

SAME = {"top1": 1.0, "verdict": 1.0}


def test_faster_with_identical_answers_is_kept() -> None:
    assert is_kept(8.0, 250.0, 12.0, 160.0, SAME)


@pytest.mark.parametrize(
    ("latency", "throughput", "agreed"),
    [
        (8.0, 250.0, {"top1": 0.998, "verdict": 1.0}),  # one photo named another breed
        (8.0, 250.0, {"top1": 1.0, "verdict": 0.999}),  # one open-set verdict changed
        (12.5, 250.0, SAME),  # slower per photo
        (8.0, 150.0, SAME),  # fewer photos/s in the deployed shape
        (12.0, 160.0, SAME),  # a tie is not a win
    ],
)
def test_anything_short_of_faster_and_identical_is_not_kept(
    latency: float, throughput: float, agreed: dict[str, float]
) -> None:
    assert not is_kept(latency, throughput, 12.0, 160.0, agreed)


def test_agreement_counts_top1_and_verdict_separately() -> None:
    reference = [("a", True), ("b", False), ("c", True), ("d", True)]
    other = [("a", True), ("x", False), ("c", False), ("d", True)]
    assert agreement(reference, other) == {"top1": 0.75, "verdict": 0.75}


def test_agreement_refuses_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError):
        agreement([("a", True)], [])


def test_openvino_runs_one_unpinned_thread() -> None:
    assert openvino_config(None) == {"INFERENCE_NUM_THREADS": 1, "ENABLE_CPU_PINNING": False}
    assert openvino_config("f32")["INFERENCE_PRECISION_HINT"] == "f32"


def _row(name: str, runtime: str, artifact: str, ms: float, per_s: float, top1: float) -> dict:
    return {
        "name": name,
        "runtime": runtime,
        "artifact": artifact,
        "precision": None,
        "median_ms": ms,
        "p90_ms": ms + 1,
        "photos_per_s": per_s,
        "agreement": {"top1": top1, "verdict": 1.0},
    }


def _result(rows: list[dict]) -> dict:
    machine = {
        "cpu": "Test CPU",
        "cores": 2,
        "memory_gb": 8.0,
        "cpu_flags": ["avx2"],
        "date": "2026-01-01 00:00 UTC",
        "commit": "abc1234",
        "python": "3.11",
        "versions": {"onnxruntime": "1", "openvino": "2"},
    }
    settings = {"calls": 300, "rounds": 10, "processes": 2, "seconds": 8.0, "openvino_config": {}}
    photos = {"splits": ["unseen", "web"], "count": 4}
    return {"machine": machine, "photos": photos, "rows": rows, "settings": settings}


def test_openvino_is_judged_against_onnx_runtime_on_the_same_artifact() -> None:
    rows = [
        _row(REFERENCE.name, "onnxruntime", "fp32.onnx", 12.0, 160.0, 1.0),
        _row("OpenVINO fp32", "openvino", "fp32.onnx", 10.0, 190.0, 1.0),
        _row("ONNX Runtime int8", "onnxruntime", "int8.onnx", 6.0, 300.0, 0.99),
        _row("OpenVINO int8", "openvino", "int8.onnx", 5.0, 330.0, 0.98),
    ]
    verdicts(rows)
    assert [r["verdict"] for r in rows] == ["reference", "kept", "baseline", "measured, not kept"]
    page = render(_result(rows))
    assert page.index(RULE) < page.index("| OpenVINO fp32 |")
    assert "**Kept:** OpenVINO fp32" in page


def test_report_says_measured_not_kept_when_nothing_wins() -> None:
    rows = [
        _row(REFERENCE.name, "onnxruntime", "fp32.onnx", 12.0, 160.0, 1.0),
        _row("OpenVINO fp32", "openvino", "fp32.onnx", 12.5, 150.0, 1.0),
    ]
    verdicts(rows)
    assert "**Measured, not kept:**" in render(_result(rows))
