"""Gather every run into results/RESULTS.md: honest accuracy first, CPU speed measured now.

    flock /tmp/breedrec-cpu.lock python -m training.reports.results [--no-speed]

Accuracy comes from ``runs/<name>/metrics.json`` (written by ``training.train``), kept per run
in ``results/run_records/<name>.json`` (``training.reports.run_records``) so runs trained elsewhere
keep their row; latency (batch 1) is measured in this one command for every artifact present,
in turn, so the speed columns compare like with like. Rows are sorted by ``unseen`` top-1,
then ``web`` top-1; ``val`` is shown only for comparison with earlier tables and is leaky.
Also writes the confusion matrices of the top row on ``unseen`` and ``web`` (aggregate
figures) when its record holds them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from model.artifact import atomic_write
from model.backends import default_threads, load_backend
from model.defaults import SHIPPED_MODEL
from model.metadata import IMAGEWOOF_CLASSES
from training.lab.data import has_feedback, load_feedback, load_split
from training.lab.distributed import hardware
from training.lab.evaluate import plot_confusion
from training.lab.open_set_data import PhotoSet, load_sets
from training.lab.paths import REPO_ROOT, data_root, runs_root
from training.lab.speed import measure_speed
from training.reports.results_page import (
    CARD_BEGIN,
    CARD_END,
    card_block,
    label_noise_lines,
    render,
    top_run,
)
from training.reports.run_records import label_noise_seed, load_records, merged, save_records

log = logging.getLogger(__name__)
LABEL_NOTES = REPO_ROOT / "training" / "label_notes.yaml"
CARD = REPO_ROOT / "model" / "README.md"


def load_runs(root: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(root.glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        if "splits" in metrics:
            metrics["_dir"] = path.parent
            rows.append(metrics)
    return rows


def shipped_row(artifact: Path) -> dict[str, Any]:
    """The artifact the service ships, evaluated like a run (its own open-set rule)."""
    from training.lab.evaluate import evaluate_artifact
    from training.lab.network import build_breed_model

    backend = load_backend(artifact, 2)
    meta = backend.metadata
    network = build_breed_model(meta.architecture, "none")  # the same network: its size
    honest = ("unseen", "web")  # its leaky val figure is in the git history of this file
    honest += ("feedback",) if has_feedback() else ()
    splits = evaluate_artifact(
        artifact, {s: load_split(None, s) for s in honest}, None, meta, backend
    )
    return {
        "run": f"**shipped** `{artifact.relative_to(REPO_ROOT)}`",
        "experiment": f"{meta.name} {meta.version} (run {meta.extra.get('run', '?')})",
        "arch": meta.architecture,
        "input_size": meta.preprocessing.input_size,
        "params_m": round(sum(p.numel() for p in network.parameters()) / 1e6, 3),
        "command": f"python -m training.lab.evaluate --artifact {artifact.relative_to(REPO_ROOT)}",
        "steps": 0,
        "splits": splits,
        "_dir": None,
        "_artifact": artifact,
    }


def verdicts_of(artifact: Path, sets: dict[str, PhotoSet]) -> dict[str, dict[str, float]]:
    """Share of each verdict (and, for breed photos, the right breed named) per set, as the
    artifact's own rule answers them."""
    from training.lab.evaluate import model_outputs
    from training.lab.open_set_scoring import verdict_shares

    backend = load_backend(artifact, 2)
    outputs = {k: model_outputs(artifact, list(s.paths), backend) for k, s in sets.items()}
    return verdict_shares(backend.metadata, outputs, sets)


def shipped_verdict_sets(ood: dict[str, PhotoSet]) -> dict[str, PhotoSet]:
    """unseen, web, cats, other dogs and, where people sent corrections, the feedback split."""
    sets = {k: ood[k] for k in ("unseen", "web", "cats", "dogs") if k in ood}
    if has_feedback():
        breeds = load_feedback()
        sets["feedback"] = PhotoSet(
            "feedback", tuple(s.path for s in breeds), labels=tuple(s.label for s in breeds)
        )
        sets["feedback_none"] = PhotoSet("feedback_none", tuple(load_feedback(breeds=False)))
    return sets


def feedback_split(artifact: Path) -> dict[str, Any]:
    """The artifact's figures on the feedback split (a run evaluated before it existed)."""
    from training.lab.evaluate import evaluate_artifact

    return evaluate_artifact(artifact, {"feedback": load_split(None, "feedback")})["feedback"]


def update_card(path: Path, block: str) -> None:
    text = path.read_text()
    if CARD_BEGIN not in text or CARD_END not in text:
        raise ValueError(f"{path} lacks the {CARD_BEGIN} ... {CARD_END} markers")
    head, rest = text.split(CARD_BEGIN, 1)
    with atomic_write(path) as part:
        part.write_text(head + block + rest.split(CARD_END, 1)[1])


def label_notes() -> list[dict[str, Any]]:
    return (yaml.safe_load(LABEL_NOTES.read_text()) or []) if LABEL_NOTES.is_file() else []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build results/RESULTS.md from runs/*.")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "RESULTS.md")
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    parser.add_argument(
        "--no-shipped", action="store_true", help="skip the shipped artifact's row and card"
    )
    parser.add_argument(
        "--no-ood", action="store_true", help="skip the cats / other-dogs refusal columns"
    )
    return parser.parse_args(argv)


def measure(rows: list[dict[str, Any]], args: argparse.Namespace, threads: int) -> None:
    """OOD refusals and speed of every row whose artifact is here (records keep theirs)."""
    ood = None if args.no_ood else load_sets(data_root(), [c.wnid for c in IMAGEWOOF_CLASSES])
    for row in rows:
        artifact = row.get("_artifact") or (
            Path(row["_dir"]) / "model.pt" if "_dir" in row else None
        )
        if artifact is None or not artifact.is_file():
            continue
        if ood is not None:
            shipped = row.get("_artifact") == SHIPPED_MODEL
            sets = shipped_verdict_sets(ood) if shipped else {k: ood[k] for k in ("cats", "dogs")}
            shares = verdicts_of(artifact, sets)
            row["ood"] = {k: shares[k]["unknown"] for k in ("cats", "dogs")}  # refused
            if shipped:
                row["verdicts"] = shares
        if has_feedback() and "feedback" not in row["splits"]:
            row["splits"]["feedback"] = feedback_split(artifact)
        if not args.no_speed:
            row.update(measure_speed(artifact, threads))


def plot_top_run(rows: list[dict[str, Any]], folder: Path) -> None:
    top = top_run(rows)
    for split in ("unseen", "web"):
        m = top["splits"].get(split) or {}
        if "confusion" in m:
            title = f"{top['run']} on {split}: top-1 {m['top1']:.1%} (n={m['n']})"
            plot_confusion(np.array(m["confusion"]), folder / f"confusion_{split}.png", title)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    fresh = load_runs(runs_root())
    rows = merged(load_records(), fresh)
    if not rows:
        print(f"results failed: no evaluated runs under {runs_root()}", file=sys.stderr)
        return 1
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    if SHIPPED_MODEL.is_file() and not args.no_shipped:
        rows.append(shipped_row(SHIPPED_MODEL))
    measure(rows, args, threads)
    save_records([r for r in rows if r.get("_dir")])
    if rows[-1].get("_artifact") == SHIPPED_MODEL:
        update_card(CARD, card_block(rows[-1]))
    plot_top_run(rows, args.out.parent)
    notes = label_notes()
    noise = label_noise_lines(
        notes, str(LABEL_NOTES.relative_to(REPO_ROOT)), rows, label_noise_seed()
    )
    page = render(rows, hardware(), None if args.no_speed else threads, noise)
    with atomic_write(args.out) as part:
        part.write_text(page)
    print(f"wrote {args.out} ({len(rows)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
