"""Which shipped ONNX copy the service serves: MODEL_PRECISION, the CPU's int8 instructions,
and the int8 copy's acceptance on the served answers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from model.backends import load_backend
from model.defaults import INT8_MODEL
from model.metadata import ModelMetadata
from model.precision import (
    SERVED_ANSWERS,
    accepted_int8,
    choose_precision,
    cpu_flags,
    int8_dot_product,
)
from service.settings import SettingsError, load_settings
from tests.support.artifacts import shipped_metadata
from tests.support.settings import use_env

REPO_ROOT = Path(__file__).resolve().parents[1]
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
VNNI = AVX2 | {"avx512f", "avx512_vnni"}


def _with_int8_acceptance(on: str | None) -> ModelMetadata:
    meta = shipped_metadata()
    int8 = {"splits": {}} if on is None else {"splits": {}, "accepted_on": on}
    return dataclasses.replace(meta, metrics={**meta.metrics, "int8": int8})


def _never_read() -> ModelMetadata:
    raise AssertionError("the int8 copy need not be read for this choice")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512_vnni\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert int8_dot_product(cpu_flags(x86)) == "avx512_vnni"
    assert int8_dot_product(cpu_flags(arm)) == "asimddp"
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_explicit_precision_wins() -> None:
    assert choose_precision("fp32", VNNI, _never_read).precision == "fp32"
    chosen = choose_precision("int8", AVX2, _never_read)
    assert chosen.precision == "int8" and chosen.reason == "MODEL_PRECISION=int8"


def test_auto_serves_fp32_without_int8_instructions() -> None:
    chosen = choose_precision("auto", AVX2, _never_read)
    assert chosen.precision == "fp32" and "no int8 dot-product instructions" in chosen.reason


def test_auto_serves_int8_only_when_the_copy_is_accepted_on_served_answers() -> None:
    refused = choose_precision("auto", VNNI, lambda: _with_int8_acceptance(None))
    assert refused.precision == "fp32" and "avx512_vnni" in refused.reason
    assert "not accepted" in refused.reason
    accepted = choose_precision("auto", VNNI, lambda: _with_int8_acceptance(SERVED_ANSWERS))
    assert accepted.precision == "int8" and "avx512_vnni" in accepted.reason


def test_the_committed_int8_copy_carries_its_acceptance_as_measured() -> None:
    """The runtime's view (metadata) and the lab's report (int8.json) say the same."""
    report = json.loads((REPO_ROOT / "results" / "bench" / "int8.json").read_text())
    assert accepted_int8(load_backend(INT8_MODEL, threads=1).metadata) == report["accepted"]


def test_bad_precision_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    use_env(monkeypatch, {"MODEL_PRECISION": "int4"})
    with pytest.raises(SettingsError, match="MODEL_PRECISION must be 'auto', 'int8' or 'fp32'"):
        load_settings()
