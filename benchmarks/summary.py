"""Turn one benchmark run (the dict ``bench.py`` builds) into small CSVs and SUMMARY.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from model.precision import int8_dot_product
from training.reports.markdown import table

BATCHES = (1, 2, 4, 8)  # images per model call in the model-only rows


def model_only_label(precision: str, batch: int) -> str:
    return f"{precision} model only (batch {batch})"


# The two model-only rows the headline uses: each copy's ceiling at one photo per call.
FP32_MODEL_ONLY = model_only_label("fp32", 1)
INT8_MODEL_ONLY = model_only_label("int8", 1)

TARGETS = {
    "rps": 220.0,
    # End to end ÷ the fp32 ONNX Runtime model-only ceiling: where the CPU has int8 dot
    # products (the int8 copy can be served), and where it has none.
    "fp32_ratio_dot_product": 1.6,
    "fp32_ratio": 0.95,
    "own_ratio": 0.8,  # end to end ÷ the served copy's own model-only ceiling (dot products)
    "p50_over_model_ms": 2.0,  # p50 at one user ≤ the served copy's single-photo time + this
    "cold_start_s": 2.0,
    "rss_mb": 200.0,
}
CPU_CLASSES_FILE = "cpu_classes.json"  # the latest headline of each CPU class benchmarked


def cpu_class(machine: dict[str, Any]) -> str:
    """The class of CPU that decides what can be served: with int8 dot products or without."""
    flag = int8_dot_product(frozenset(machine.get("cpu_flags", [])))
    return f"int8 dot product ({flag})" if flag else "no int8 dot product"


def served(result: dict[str, Any]) -> str:
    """The service as deployed on this CPU: the ONNX copy ``MODEL_PRECISION=auto`` chose."""
    return result["served"]["service"]


def _model_ms(result: dict[str, Any]) -> float | None:
    """The served artifact's single-photo model time (in-process stages, deployed threads)."""
    precision = result["served"]["precision"]
    return next(
        (
            s["median_ms"]
            for s in result.get("stages", [])
            if s.get("artifact") == precision and s["stage"] == "model"
        ),
        None,
    )


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """The ``columns`` of ``rows`` as a Markdown table, numbers shortened by ``_fmt``."""
    return table(columns, [[_fmt(row.get(c)) for c in columns] for row in rows])


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def _best(load: list[dict[str, Any]], service: str) -> dict[str, Any] | None:
    rows = [r for r in load if r["service"] == service]
    return max(rows, key=lambda r: r["rps"]) if rows else None


def _equal_load_ratios(result: dict[str, Any]) -> str:
    load = result["load"]
    ours = {r["users"]: r["rps"] for r in load if r["service"] == served(result)}
    naive = {r["users"]: r["rps"] for r in load if r["service"] == "naive"}
    parts = [f"{ours[u] / naive[u]:.1f}× at {u} users" for u in sorted(ours) if naive.get(u)]
    return ", ".join(parts) or "–"


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers the targets are about."""
    load, name = result["load"], served(result)
    ours = _best(load, name)
    fp32 = _best(load, "ours-fp32")
    naive = _best(load, "naive")
    one_user = next((r for r in load if r["service"] == name and r["users"] == 1), None)
    startup = {s["service"]: s for s in result["startup"]}
    model_only = {m["what"]: m["per_s"] for m in result.get("model_only", [])}
    ours_rows = [r for r in load if r["service"] == name]
    precision = result["served"]["precision"]
    fp32_ceiling = model_only.get(FP32_MODEL_ONLY)
    own_ceiling = model_only.get(model_only_label(precision, 1))
    model_ms = _model_ms(result)
    return {
        "service": name,
        "precision": precision,
        "cpu_class": cpu_class(result["machine"]),
        "model_ms": model_ms,
        "rps": ours["rps"] if ours else None,
        "rps_users": ours["users"] if ours else None,
        "failures": sum(r["failures"] for r in ours_rows),
        "fp32_rps": fp32["rps"] if fp32 else None,
        "naive_rps": naive["rps"] if naive else None,
        "naive_ratio": round(ours["rps"] / naive["rps"], 1) if ours and naive else None,
        "fp32_model_only": fp32_ceiling,
        "model_only_ratio": round(ours["rps"] / fp32_ceiling, 2) if ours and fp32_ceiling else None,
        "own_model_only": own_ceiling,
        "own_ratio": round(ours["rps"] / own_ceiling, 2) if ours and own_ceiling else None,
        "p50_1user_ms": one_user["p50_ms"] if one_user else None,
        "cold_start_s": startup.get(name, {}).get("cold_start_s"),
        "worker_class": startup.get(name, {}).get("worker_class"),
        "rss_mb": max((r["worker_rss_max_mb"] for r in ours_rows), default=None),
    }


def cpu_budget(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Server CPU per /predict at saturation, split into measured parts, against the budget."""
    load, name, precision = result["load"], served(result), result["served"]["precision"]
    ours = _best(load, name)
    floor = next((r for r in load if r["service"] == f"{name} /healthz only"), None)
    stages = {
        s["stage"]: s["median_ms"]
        for s in result.get("stages", [])
        if s.get("artifact") == precision
    }
    if not ours or not stages or ours.get("server_cpu_ms_per_req") is None:
        return []
    total = ours["server_cpu_ms_per_req"]
    model = stages.get("model", 0.0)
    prep = stages.get("total", 0.0) - model
    http = floor["server_cpu_ms_per_req"] if floor else None
    rest = total - stages.get("total", 0.0) - (http or 0.0)
    cores = result["machine"]["cores"]
    budget = cores * (1 - ours["locust_cpu_share"]) / TARGETS["rps"] * 1000
    rows = [
        {"part": f"{precision} model (ONNX Runtime, 1 thread)", "ms": model},
        {"part": "decode + resize/crop + normalise + read-out", "ms": round(prep, 2)},
        {"part": "HTTP stack: gunicorn + Flask + metrics (a /healthz request)", "ms": http},
        {
            "part": "the rest: multipart upload parsing, /predict route, JSON, logs",
            "ms": round(rest, 2),
        },
        {"part": f"= server CPU per /predict at {ours['users']} users (measured)", "ms": total},
        {
            "part": f"budget for {TARGETS['rps']:.0f} rps on {cores} cores minus locust's share",
            "ms": round(budget, 2),
        },
    ]
    return rows


LOAD_NOTE = (
    "server_cpu_ms_per_req: CPU seconds of the gunicorn master + workers over the run / "
    "requests. locust_cpu_share / machine_idle_share: fraction of all cores used by locust "
    "/ left idle."
)
BATCH_NOTE = (
    "Batches of 2, 4 and 8 photos per model call: the service batches only if these beat "
    "batch 1 by more than the wait a batch adds at low load (docs/benchmark.md#batching)."
)
CPU_CLASS_NOTE = (
    f"Each row is the latest `make bench` on that class of CPU ({CPU_CLASSES_FILE}); "
    "e2e_over_fp32_ceiling: /predict rps at saturation ÷ the fp32 copy's model-only rate, "
    "e2e_over_own_ceiling: ÷ the served copy's own, both from the same run."
)
LOAD_COLUMNS = [
    "service",
    "users",
    "requests",
    "failures",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "worker_rss_max_mb",
    "server_cpu_ms_per_req",
    "locust_cpu_share",
    "machine_idle_share",
]
STARTUP_COLUMNS = [
    "service",
    "cold_start_s",
    "all_workers_ready_s",
    "workers",
    "worker_class",
    "threads_per_worker",
    "idle_worker_rss_mb",
]


def _met(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def _at_least(value: Any, target: float) -> bool | None:
    return None if value is None else value >= target


def _at_most(value: Any, target: float) -> bool | None:
    return None if value is None else value <= target


def targets(h: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: what it asks, what was measured, whether it is met. The ratio
    targets depend on the CPU class: int8 can pay only where the CPU has dot products."""
    t = TARGETS
    dot_product = h["cpu_class"] != "no int8 dot product"
    fp32_target = t["fp32_ratio_dot_product"] if dot_product else t["fp32_ratio"]
    rows = [
        {
            "target": f"/predict rps at saturation, 0 failures (≥ {t['rps']:.0f})",
            "measured": f"{_fmt(h['rps'])} rps at {h['rps_users']} users, {h['failures']} failures",
            "met": _met(_at_least(h["rps"], t["rps"]) and h["failures"] == 0),
        },
        {
            "target": f"end-to-end ÷ fp32 model-only, same run (≥ {fp32_target:.2f}× on a CPU "
            f"with{'' if dot_product else 'out'} int8 dot products)",
            "measured": f"{_fmt(h['model_only_ratio'])}× "
            f"(fp32 model only {_fmt(h['fp32_model_only'])}/s)",
            "met": _met(_at_least(h["model_only_ratio"], fp32_target)),
        },
    ]
    if dot_product:
        rows.append(
            {
                "target": f"end-to-end ÷ the served {h['precision']} copy's own model-only "
                f"ceiling (≥ {t['own_ratio']:.2f}×)",
                "measured": f"{_fmt(h['own_ratio'])}× ({h['precision']} model only "
                f"{_fmt(h['own_model_only'])}/s)",
                "met": _met(_at_least(h["own_ratio"], t["own_ratio"])),
            }
        )
    rows += [
        {
            "target": f"p50 at 1 user (≤ the {h['precision']} model's single-photo time + "
            f"{t['p50_over_model_ms']:.0f} ms)",
            "measured": f"{_fmt(h['p50_1user_ms'])} ms (model {_fmt(h['model_ms'])} ms)",
            "met": _met(
                None
                if h["model_ms"] is None
                else _at_most(h["p50_1user_ms"], h["model_ms"] + t["p50_over_model_ms"])
            ),
        },
        {
            "target": f"cold start, process start → /readyz 200 (≤ {t['cold_start_s']:.0f} s)",
            "measured": f"{_fmt(h['cold_start_s'])} s",
            "met": _met(_at_most(h["cold_start_s"], t["cold_start_s"])),
        },
        {
            "target": f"RSS per worker under load (≤ {t['rss_mb']:.0f} MB)",
            "measured": f"{_fmt(h['rss_mb'])} MB",
            "met": _met(_at_most(h["rss_mb"], t["rss_mb"])),
        },
    ]
    return rows


def by_cpu_class(result: dict[str, Any], h: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """This run's ratios replace the last ones of its CPU class in ``out``/cpu_classes.json;
    every class measured so far, one row each (the fleet's CPUs vary)."""
    path = out / CPU_CLASSES_FILE
    classes = json.loads(path.read_text()) if path.is_file() else {}
    m = result["machine"]
    classes[h["cpu_class"]] = {
        "cpu_class": h["cpu_class"],
        "cpu": f"{m['cpu']}, {m['cores']} cores",
        "measured": f"{m['date']}, commit {m['commit']}",
        "served": h["service"],
        "rps": h["rps"],
        "e2e_over_fp32_ceiling": h["model_only_ratio"],
        "e2e_over_own_ceiling": h["own_ratio"],
        "p50_1user_ms": h["p50_1user_ms"],
        "model_ms": h["model_ms"],
    }
    path.write_text(json.dumps(classes, indent=2, sort_keys=True) + "\n")
    return [classes[name] for name in sorted(classes)]


CPU_CLASS_COLUMNS = [
    "cpu_class",
    "cpu",
    "measured",
    "served",
    "rps",
    "e2e_over_fp32_ceiling",
    "e2e_over_own_ceiling",
    "p50_1user_ms",
    "model_ms",
]


def _introduction(result: dict[str, Any], h: dict[str, Any]) -> list[str]:
    """Who wrote the summary, on what, with which load and artifacts."""
    m = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    settings = result.get("settings", {})
    artifacts = settings.get("artifacts", {})
    return [
        f"Written by `{settings.get('command', 'make bench')}` "
        f"(`make bench`) on {m['date']}, commit {m['commit']}, in "
        f"{result.get('bench_seconds', '?')} s.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM; Python "
        f"{m['python']}; {versions}.",
        "Load: locust (headless subprocess on the same 2 cores, FastHttpUser, no wait time, "
        f"{settings.get('photos')} Imagewoof val photos as {settings.get('upload')} uploads, "
        f"{settings.get('seconds')} s per level, naive at {settings.get('naive_levels')} "
        "users); traffic to 127.0.0.1 only. Shared machine: absolute numbers are noisy, ratios "
        "within one run are what to compare.",
        f"CPU flags that decide the precision: {', '.join(m.get('cpu_flags', [])) or 'none'}. "
        f"Served as deployed here: `{h['service']}` ({result['served']['reason']}); "
        f"`ours-int8` serves `{artifacts.get('int8', 'int8')}`, `ours-fp32` "
        f"`{artifacts.get('fp32', 'fp32')}`; gunicorn worker class `{h['worker_class']}`, "
        "deployed processes × threads in the start-up table.",
    ]


def _headline_text(result: dict[str, Any], h: dict[str, Any]) -> str:
    return (
        f"Headline: the {h['precision']} service (as deployed on this CPU) answers "
        f"{_fmt(h['model_only_ratio'])}× as many photos per "
        "second as the fp32 artifact alone can compute with the deployed processes × threads "
        f"(no HTTP, no decode); the fp32 service peaks at {_fmt(h['fp32_rps'])} rps. "
        f"Naive baseline: {_fmt(h['naive_ratio'])}× best vs best (naive "
        f"{_fmt(h['naive_rps'])} rps); at equal load, ours ÷ naive: "
        f"{_equal_load_ratios(result)}."
    )


def write_summary(result: dict[str, Any], out: Path) -> str:
    """Write load/startup/stages/model_only CSVs and SUMMARY.md into ``out``; return the text."""
    _write_csv(out / "load.csv", result["load"])
    _write_csv(out / "startup.csv", result["startup"])
    _write_csv(out / "stages.csv", result.get("stages", []))
    _write_csv(out / "model_only.csv", result.get("model_only", []))
    h = headline(result)
    sections = [
        (
            "Targets",
            _table(targets(h), ["target", "measured", "met"]) + "\n\n" + _headline_text(result, h),
        ),
        ("Load levels (/predict)", _table(result["load"], LOAD_COLUMNS) + "\n\n" + LOAD_NOTE),
        ("Start-up", _table(result["startup"], STARTUP_COLUMNS)),
        (
            "Where the time of one request goes (in-process, one thread, val photos)",
            _table(result.get("stages", []), ["artifact", "stage", "median_ms", "mean_ms"]),
        ),
        (
            "CPU per request at saturation vs the budget for the target",
            _table(cpu_budget(result), ["part", "ms"]),
        ),
        (
            "Model-only throughput (deployed processes × threads, no HTTP)",
            _table(result.get("model_only", []), ["what", "processes", "threads", "per_s"])
            + "\n\n"
            + BATCH_NOTE,
        ),
        (
            "By CPU class (the latest run on each)",
            _table(by_cpu_class(result, h, out), CPU_CLASS_COLUMNS) + "\n\n" + CPU_CLASS_NOTE,
        ),
    ]
    lines = ["# Benchmark summary", "", *_introduction(result, h), ""]
    for title, body in sections:
        lines += [f"## {title}", "", body, ""]
    text = "\n".join(lines)
    (out / "SUMMARY.md").write_text(text)
    return text
