"""OpenVINO measured against ONNX Runtime on this CPU, on the same ONNX artifacts.

    .venv/bin/python -m benchmarks.openvino        # ~3 min under the CPU lock

One run, one machine: the fp32 and the static-int8 ONNX artifacts, each run by ONNX Runtime
(``model.backends.OnnxBackend``, as served) and by OpenVINO (``Core().compile_model`` on the
same file, CPU device, one inference thread, thread pinning off as for several gunicorn
workers). On the fp32 graph OpenVINO runs twice: with f32 inference precision and with the
precision it picks by itself on this CPU (bf16 where the CPU has it).

1. Answers: every ``unseen`` + ``web`` photo, preprocessed once with the service's
   preprocessing, through every runtime; the outputs are read as the service reads them
   (``Predictor.interpret``: top-1 breed and open-set verdict) and compared with ONNX Runtime
   fp32.
2. Batch-1 latency, one thread: the runtimes take turns in rounds, so drift on the shared
   cores hits all of them alike; median and p90 per call.
3. Throughput of the deployed shape, 2 processes x 1 thread, per runtime.

The keep rule is written in the report before the figures: OpenVINO would become a serving
backend only if it is faster than ONNX Runtime on the same artifact (latency and throughput)
and its answers are identical to ONNX Runtime fp32 on every photo.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.harness.cpu_lock import cpu_lock
from benchmarks.harness.machine import machine_info
from benchmarks.harness.parallel import parallel_rate
from model.backends import OnnxBackend
from model.defaults import FP32_MODEL, INT8_MODEL
from model.metadata import ModelMetadata
from model.predictor import Predictor
from model.preprocessing import preprocess_bytes
from training.reports.markdown import table
from training.timing import time_calls

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench" / "openvino"
SPLITS = ("unseen", "web")
CPU_FLAG_PREFIXES = ("avx2", "avx512", "avx_vnni", "amx")

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Variant:
    """One runtime on one artifact; ``precision`` is OpenVINO's inference precision hint."""

    name: str
    runtime: str
    artifact: str
    precision: str | None = None


REFERENCE = Variant("ONNX Runtime fp32", "onnxruntime", str(FP32_MODEL))
VARIANTS = (
    REFERENCE,
    Variant("OpenVINO fp32 (f32)", "openvino", str(FP32_MODEL), "f32"),
    Variant("OpenVINO fp32 (own precision)", "openvino", str(FP32_MODEL)),
    Variant("ONNX Runtime int8", "onnxruntime", str(INT8_MODEL)),
    Variant("OpenVINO int8", "openvino", str(INT8_MODEL)),
)


def openvino_config(precision: str | None) -> dict[str, Any]:
    """One inference thread, no pinning (workers share the cores), optional precision hint."""
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": 1, "ENABLE_CPU_PINNING": False}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    return config


def open_runner(variant: Variant) -> Runner:
    """A batch-in, logits-out callable for the variant, loaded as a serving process would."""
    if variant.runtime == "onnxruntime":
        return OnnxBackend(Path(variant.artifact), threads=1).run
    import openvino as ov

    compiled = ov.Core().compile_model(variant.artifact, "CPU", openvino_config(variant.precision))
    request = compiled.create_infer_request()

    def run(batch: np.ndarray) -> np.ndarray:
        request.infer({0: batch})
        return request.get_output_tensor(0).data.copy()

    return run


def openvino_precision(variant: Variant) -> str:
    """The inference precision OpenVINO actually compiled the variant with."""
    import openvino as ov

    compiled = ov.Core().compile_model(variant.artifact, "CPU", openvino_config(variant.precision))
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def cpu_flags() -> list[str]:
    """The CPU flags that decide which kernels the runtimes pick (AVX2, AVX-512, VNNI, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return sorted(f for f in flags if f.startswith(CPU_FLAG_PREFIXES))
    return []


def load_photos(meta: ModelMetadata, limit: int | None = None) -> np.ndarray:
    """The ``unseen`` + ``web`` photos of the lab's data root, preprocessed as the service does.

    ``limit`` keeps the first photos only (a quick try of the command, not a report).
    """
    from training.lab.data import load_split

    samples = [s for split in SPLITS for s in load_split(None, split)][:limit]
    rows = [
        preprocess_bytes(s.path.read_bytes(), meta.preprocessing)
        for s in tqdm(samples, desc="preprocess", file=sys.stderr)
    ]
    return np.stack(rows)


def answers(predictor: Predictor, outputs: np.ndarray) -> list[tuple[str, bool]]:
    """(top-1 wnid, known verdict) per photo, read as the service reads model outputs."""
    return [(p.top_k[0].wnid, p.known) for p in predictor.interpret(outputs, top_k=1)]


def agreement(reference: list[tuple[str, bool]], other: list[tuple[str, bool]]) -> dict[str, float]:
    """Share of photos with the same top-1 breed, and with the same open-set verdict."""
    if len(reference) != len(other) or not reference:
        raise ValueError(f"need two equal, non-empty answer lists: {len(reference)}, {len(other)}")
    pairs = list(zip(reference, other, strict=True))
    return {
        "top1": sum(a[0] == b[0] for a, b in pairs) / len(pairs),
        "verdict": sum(a[1] == b[1] for a, b in pairs) / len(pairs),
    }


def is_kept(
    latency_ms: float,
    throughput: float,
    baseline_latency_ms: float,
    baseline_throughput: float,
    agreed: dict[str, float],
) -> bool:
    """The keep rule: faster than ONNX Runtime on the same artifact and identical answers."""
    faster = latency_ms < baseline_latency_ms and throughput > baseline_throughput
    return faster and agreed["top1"] == 1.0 and agreed["verdict"] == 1.0


def compare_answers(
    runners: dict[str, Runner], photos: np.ndarray, predictor: Predictor
) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant, photo by photo at batch 1: agreement with the reference (``fp32``) and
    with ONNX Runtime on the same artifact (``same_artifact``)."""
    read = {
        name: answers(predictor, np.concatenate([run(row[None]) for row in photos]))
        for name, run in tqdm(runners.items(), desc="answers", file=sys.stderr)
    }
    onnxruntime = {v.artifact: v.name for v in VARIANTS if v.runtime == "onnxruntime"}
    return {
        v.name: {
            "fp32": agreement(read[REFERENCE.name], read[v.name]),
            "same_artifact": agreement(read[onnxruntime[v.artifact]], read[v.name]),
        }
        for v in VARIANTS
    }


def interleaved_latency(
    runners: dict[str, Runner], photos: np.ndarray, calls: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Median and p90 ms per batch-1 call, the runtimes taking turns round after round."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    per_round = max(1, calls // rounds)
    for _ in tqdm(range(rounds), desc="latency rounds", file=sys.stderr):
        for name, run in runners.items():
            batches: Iterator[np.ndarray] = cycle(row[None] for row in photos[:64])
            call = lambda run=run, batches=batches: run(next(batches))  # noqa: E731
            times[name] += time_calls(call, repeats=per_round, warmup=3)
    return {
        name: {
            "median_ms": round(statistics.median(ts) * 1000, 2),
            "p90_ms": round(float(np.percentile(ts, 90)) * 1000, 2),
            "calls": len(ts),
        }
        for name, ts in times.items()
    }


def _throughput_worker(variant: Variant, seconds: float, photos, barrier, queue) -> None:
    run = open_runner(variant)
    batches = [row[None] for row in photos]
    for batch in batches[:5]:
        run(batch)
    barrier.wait()
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        run(batches[count % len(batches)])
        count += 1
    queue.put(count)


def throughput(variant: Variant, photos: np.ndarray, processes: int, seconds: float) -> float:
    """Photos/s of ``processes`` processes x 1 thread running the variant, started together."""
    args = (variant, seconds, photos[:32])
    return round(parallel_rate(_throughput_worker, args, processes, seconds), 1)


def verdicts(rows: list[dict[str, Any]]) -> None:
    """Mark every OpenVINO row kept or not, against ONNX Runtime on the same artifact."""
    baseline = {r["artifact"]: r for r in rows if r["runtime"] == "onnxruntime"}
    for row in rows:
        if row["runtime"] == "onnxruntime":
            row["verdict"] = "reference" if row["name"] == REFERENCE.name else "baseline"
            continue
        base = baseline[row["artifact"]]
        kept = is_kept(
            row["median_ms"],
            row["photos_per_s"],
            base["median_ms"],
            base["photos_per_s"],
            row["agreement"],
        )
        row["verdict"] = "kept" if kept else "measured, not kept"


def run(args: argparse.Namespace) -> dict[str, Any]:
    reference = OnnxBackend(Path(REFERENCE.artifact), threads=1)
    predictor = Predictor(reference)
    photos = load_photos(reference.metadata, args.limit)
    int8_meta = OnnxBackend(INT8_MODEL, threads=1).metadata
    if int8_meta.preprocessing != reference.metadata.preprocessing:
        raise SystemExit("the int8 and fp32 artifacts preprocess differently; compare is void")
    runners = {v.name: open_runner(v) for v in VARIANTS}
    agreed = compare_answers(runners, photos, predictor)
    latency = interleaved_latency(runners, photos, args.calls, args.rounds)
    del runners
    rows = []
    for variant in tqdm(VARIANTS, desc="throughput", file=sys.stderr):
        row = asdict(variant) | latency[variant.name]
        row["agreement"] = agreed[variant.name]["fp32"]
        row["agreement_same_artifact"] = agreed[variant.name]["same_artifact"]
        row["photos_per_s"] = throughput(variant, photos, args.processes, args.seconds)
        if variant.runtime == "openvino":
            row["precision"] = openvino_precision(variant)
        rows.append(row)
    verdicts(rows)
    machine = machine_info()
    machine["cpu_flags"] = cpu_flags()
    machine["versions"]["openvino"] = version("openvino")
    return {
        "machine": machine,
        "photos": {"splits": list(SPLITS), "count": len(photos)},
        "settings": {k: v for k, v in vars(args).items() if k != "out"}
        | {"openvino_config": openvino_config(None)},
        "rows": rows,
    }


RULE = (
    "OpenVINO is kept as a serving backend only if it is faster than ONNX Runtime on this CPU "
    "(lower median batch-1 latency and more photos/s at 2 processes x 1 thread, against ONNX "
    "Runtime on the same artifact) AND its answers are identical to ONNX Runtime fp32 "
    "(top-1 and open-set verdict agreement 100% on unseen + web). Otherwise it is "
    '"measured, not kept".'
)


def render(result: dict[str, Any]) -> str:
    """The Markdown report: the rule first, then machine, figures and verdict."""
    machine, rows = result["machine"], result["rows"]
    kept = [r["name"] for r in rows if r["verdict"] == "kept"]
    fastest = min((r for r in rows if r["runtime"] == "onnxruntime"), key=lambda r: r["median_ms"])
    verdict = (
        f"**Kept:** {', '.join(kept)} meet(s) the rule. The fastest ONNX Runtime row is "
        f"{fastest['name']} at {fastest['median_ms']} ms; adding a backend is a separate change."
        if kept
        else "**Measured, not kept:** no OpenVINO variant meets the rule; ONNX Runtime stays."
    )
    header = [
        "runtime",
        "artifact",
        "precision",
        "median ms",
        "p90 ms",
        "photos/s 2x1",
        "top-1 agreement",
        "verdict agreement",
        "top-1 / verdict vs ORT, same artifact",
        "verdict",
    ]
    body = [
        [
            r["name"],
            Path(r["artifact"]).name,
            r["precision"] or "the graph's",
            r["median_ms"],
            r["p90_ms"],
            r["photos_per_s"],
            f"{r['agreement']['top1']:.2%}",
            f"{r['agreement']['verdict']:.2%}",
            _same_artifact(r),
            r["verdict"],
        ]
        for r in rows
    ]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    settings = result["settings"]
    return "\n".join(
        [
            "# OpenVINO against ONNX Runtime",
            "",
            f"Rule (fixed before measuring): {RULE}",
            "",
            f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB; "
            f"CPU flags: {' '.join(machine['cpu_flags']) or 'none of avx2/avx512/vnni/amx'}. "
            f"{machine['date']}, commit {machine['commit']}, Python {machine['python']}; "
            f"{versions}.",
            "",
            f"Photos: {result['photos']['count']} ({' + '.join(result['photos']['splits'])}), "
            "preprocessed once with the service's preprocessing; answers read with "
            "`Predictor.interpret` and compared with ONNX Runtime fp32. Latency: batch 1, one "
            f"thread, {settings['calls']} calls per runtime in {settings['rounds']} interleaved "
            f"rounds. Throughput: {settings['processes']} processes x 1 thread for "
            f"{settings['seconds']} s each. OpenVINO config: `{settings['openvino_config']}`.",
            "",
            table(header, body, ["l", "l", "l", "r", "r", "r", "r", "r", "r", "l"]),
            "",
            verdict,
            "",
            "Command: `.venv/bin/python -m benchmarks.openvino` (under the CPU lock).",
            "",
        ]
    )


def _same_artifact(row: dict[str, Any]) -> str:
    agreed = row.get("agreement_same_artifact")
    return f"{agreed['top1']:.2%} / {agreed['verdict']:.2%}" if agreed else ""


def write(result: dict[str, Any], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    page = out.with_suffix(".md")
    page.write_text(render(result))
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.openvino", description=__doc__)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per runtime")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="throughput time per runtime")
    parser.add_argument("--limit", type=int, help="first N photos only (a quick try)")
    parser.add_argument("--out", type=Path, default=OUT, help="path without suffix")
    args = parser.parse_args(argv)
    with cpu_lock():
        print(write(run(args), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
