"""Which shipped ONNX artifact to serve on this CPU: static int8 or fp32.

int8 pays only where the CPU has int8 dot-product instructions (x86 VNNI, AVX-512 VNNI, AMX;
ARM's dot product): there ONNX Runtime's fast u8×s8 kernels accumulate in 32 bits, exactly and
about twice as fast. Without them (plain AVX2) the fast kernels saturate 16-bit sums, so int8
must run on slower exact kernels and buys nothing over fp32. ``auto`` also requires the int8
copy to have passed the lab's acceptance on the answers the service gives (recorded in its
metadata); otherwise fp32 is served everywhere.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from model.metadata import ModelMetadata

# /proc/cpuinfo flags of int8 dot-product instructions (x86 "flags", ARM "Features").
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
# What ``metrics.int8.accepted_on`` says when the lab accepted an int8 copy by comparing the
# service's own answers (prior and open-set rule applied) with fp32's.
SERVED_ANSWERS = "served answers"


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "int8" or "fp32"
    reason: str


def _cpuinfo_field(names: tuple[str, ...], cpuinfo: Path) -> str | None:
    """The first processor's value of one of ``names`` in /proc/cpuinfo (None if absent)."""
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in names:
            return value.strip()
    return None


@cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
    return frozenset((_cpuinfo_field(("flags", "Features"), cpuinfo) or "").split())


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, as figures say where they were measured."""
    return _cpuinfo_field(("model name",), cpuinfo) or platform.processor() or "unknown CPU"


def int8_dot_product(flags: frozenset[str]) -> str | None:
    """The first int8 dot-product flag the CPU has, or None."""
    return next((flag for flag in INT8_DOT_PRODUCT_FLAGS if flag in flags), None)


def accepted_int8(meta: ModelMetadata) -> bool:
    """True for an int8 copy the lab accepted on the service's own answers."""
    int8 = meta.metrics.get("int8")
    return isinstance(int8, dict) and int8.get("accepted_on") == SERVED_ANSWERS


def choose_precision(
    requested: str, flags: frozenset[str], int8_metadata: Callable[[], ModelMetadata]
) -> PrecisionChoice:
    """``requested`` is MODEL_PRECISION; ``int8_metadata`` reads the int8 copy (only if needed)."""
    if requested in ("fp32", "int8"):
        return PrecisionChoice(requested, f"MODEL_PRECISION={requested}")
    flag = int8_dot_product(flags)
    if flag is None:
        return PrecisionChoice(
            "fp32", "auto: this CPU has no int8 dot-product instructions (VNNI, AMX, ARM dotprod)"
        )
    if not accepted_int8(int8_metadata()):
        why = f"auto: the CPU has {flag}, but the int8 copy is not accepted on the served answers"
        return PrecisionChoice("fp32", why)
    return PrecisionChoice("int8", f"auto: the CPU has {flag}, and the int8 copy is accepted")
