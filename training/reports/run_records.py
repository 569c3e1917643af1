"""Each run's row of the results page, kept as a committed record (``results/run_records/``).

``runs/`` (checkpoints, artifacts, galleries) stays on the machine that trained, so the page
is rendered from these records: ``training.reports.results`` refreshes the record of every
run it finds under ``runs/`` and keeps the others as they are. A record holds the figures the
page shows and nothing else (photos are named only where a run missed them on ``unseen``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.artifact import atomic_write
from training.lab.paths import REPO_ROOT

RECORDS = REPO_ROOT / "results" / "run_records"
LABEL_NOISE_SEED = "label_noise.json"
ROW_KEYS = (
    "run", "experiment", "stopped_early", "input_size", "params_m", "steps", "train_wall_s",
    "command", "latency_ms", "ood",
)  # fmt: skip
SPLIT_KEYS = ("n", "top1", "top1_ci95", "top5", "served", "served_ci95", "refused", "per_breed")


def record_of(row: dict[str, Any]) -> dict[str, Any]:
    """What the page needs of a run's row (``runs/<run>/metrics.json`` plus what was measured)."""
    record = {key: row[key] for key in ROW_KEYS if key in row}
    record["splits"] = {}
    for split, m in row["splits"].items():
        kept = {key: m[key] for key in SPLIT_KEYS if key in m}
        if "confusion" in m and split in ("unseen", "web"):
            kept["confusion"] = m["confusion"]
        if split == "unseen" and "mistakes" in m:
            kept["mistakes"] = [{"photo": mistake["photo"]} for mistake in m["mistakes"]]
        record["splits"][split] = kept
    return record


def save_records(rows: list[dict[str, Any]], folder: Path = RECORDS) -> None:
    for row in rows:
        with atomic_write(folder / f"{row['run']}.json") as part:
            part.write_text(json.dumps(record_of(row), indent=2, sort_keys=True) + "\n")


def load_records(folder: Path = RECORDS) -> list[dict[str, Any]]:
    """Every run's record, by run name."""
    return [
        json.loads(path.read_text())
        for path in sorted(folder.glob("*.json"))
        if path.name != LABEL_NOISE_SEED
    ]


def merged(records: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records, each replaced by its run's fresh row where ``runs/`` has that run.

    A fresh row keeps its record's speed and OOD figures until they are measured again.
    """
    rows = {r["run"]: r for r in records}
    for row in fresh:
        old = rows.get(row["run"], {})
        rows[row["run"]] = {**{k: old[k] for k in ("latency_ms", "ood") if k in old}, **row}
    return [rows[name] for name in sorted(rows)]


def label_noise_seed(folder: Path = RECORDS) -> dict[str, Any]:
    """Misses of the noted ``unseen`` photos among runs whose record names no mistakes.

    ``{"runs": [...], "missed": {photo: count}}``: records first written from the page
    itself carry its figures but not which run missed which photo, only how many did.
    """
    path = folder / LABEL_NOISE_SEED
    return json.loads(path.read_text()) if path.is_file() else {"runs": [], "missed": {}}
