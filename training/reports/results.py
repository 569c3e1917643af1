"""Gather every run into results/RESULTS.md: honest accuracy first, CPU speed measured now.

    flock /tmp/breedrec-cpu.lock python -m training.reports.results [--no-speed]

Accuracy comes from ``runs/<name>/metrics.json`` (written by ``training.train``); latency
(batch 1) and throughput (batch 32) are measured in this one command for every artifact in
turn, so the speed columns compare like with like. Rows are sorted by ``unseen`` top-1, then
``web`` top-1; ``val`` is shown only for comparison with earlier tables and is leaky. Also
writes the confusion matrices of the top row on ``unseen`` and ``web`` (aggregate figures).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from model.backends import default_threads, load_backend
from model.metadata import IMAGEWOOF_CLASSES
from training.lab.distributed import hardware
from training.lab.evaluate import MIN_PHOTOS_PER_BREED, NAMES, VAL_CAVEAT, plot_confusion
from training.lab.paths import REPO_ROOT, data_root, runs_root
from training.release.open_set_data import PhotoSet, load_sets

log = logging.getLogger(__name__)
CONFIGS = REPO_ROOT / "training" / "configs"
LABEL_NOTES = REPO_ROOT / "training" / "label_notes.yaml"
WEB_BREEDS = ("Beagle", "Golden retriever")
SHIPPED = REPO_ROOT / "model" / "efficientnet_lite0_imagewoof.pt"
CARD = REPO_ROOT / "model" / "README.md"
CARD_BEGIN, CARD_END = "<!-- figures from training.reports.results -->", "<!-- end of figures -->"


def measure_speed(
    artifact: Path, threads: int, runs: int = 30, batch: int = 32, batch_runs: int = 3
) -> dict[str, float]:
    """Median batch-1 latency (ms) and batch-``batch`` throughput (photos/s) of the artifact."""
    backend = load_backend(artifact, threads)
    size = backend.metadata.preprocessing.input_size
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    many = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    for _ in range(3):
        backend.run(one)
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        backend.run(one)
        latencies.append(time.perf_counter() - started)
    backend.run(many)
    started = time.perf_counter()
    for _ in range(batch_runs):
        backend.run(many)
    elapsed = time.perf_counter() - started
    return {
        "latency_ms": round(statistics.median(latencies) * 1000, 1),
        "throughput_ips": round(batch * batch_runs / elapsed, 1),
    }


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
    from training.lab.data import load_split
    from training.lab.evaluate import evaluate_artifact
    from training.lab.network import build_breed_model

    backend = load_backend(artifact, 2)
    meta = backend.metadata
    network = build_breed_model(meta.architecture, "none")  # the same network: its size
    honest = ("unseen", "web")  # its leaky val figure is in the git history of this file
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


def ood_refusals(artifact: Path, sets: dict[str, PhotoSet]) -> dict[str, float]:
    """Share of ``ood/`` cats and other-breed dogs the artifact's own open-set rule refuses."""
    from training.lab.answers import read_answers
    from training.lab.evaluate import model_outputs

    backend = load_backend(artifact, 2)
    meta = backend.metadata
    refused = {}
    for name in ("cats", "dogs"):
        outputs = model_outputs(artifact, list(sets[name].paths), backend)
        refused[name] = float((~read_answers(outputs, meta).known).mean())
    return refused


def card_block(row: dict[str, Any]) -> str:
    """The shipped artifact's honest figures, as the model card shows them."""
    lines = [
        CARD_BEGIN,
        f"Measured by `python -m training.reports.results` ({row['experiment']}), "
        "through the service runtime; 95% Wilson intervals. Served = right AND accepted by the "
        "artifact's open-set rule.",
        "",
        "| photos | n | top-1 [95% CI] | served [95% CI] | refused |",
        "|---|---:|---|---|---:|",
    ]
    labels = {
        "unseen": "`unseen`: ImageNet-validation photos, never seen by the backbone",
        "web": "`web`: web photos (mostly beagles, golden retrievers)",
        "val": "`val`: LEAKY, ~96% ImageNet-1k train photos (comparison only)",
    }
    for split, m in row["splits"].items():
        lo, hi = m["top1_ci95"]
        slo, shi = m["served_ci95"]
        lines.append(
            f"| {labels[split]} | {m['n']} | {m['top1']:.1%} [{lo:.1%}, {hi:.1%}] "
            f"| {m['served']:.1%} [{slo:.1%}, {shi:.1%}] | {m['refused']:.1%} |"
        )
    web = row["splits"]["web"]["per_breed"]
    lines += [
        "",
        "On `web`, per breed with ≥ 20 photos: "
        + ", ".join(f"{b} {web[b]['top1']:.1%} of {web[b]['n']}" for b in WEB_BREEDS if b in web)
        + ".",
    ]
    if "ood" in row:
        lines += [
            "",
            f'Refused as "not one of my breeds": {row["ood"]["cats"]:.1%} of the cats and '
            f"{row['ood']['dogs']:.1%} of the other dog breeds in `ood/`.",
        ]
    lines.append(CARD_END)
    return "\n".join(lines)


def update_card(path: Path, block: str) -> None:
    text = path.read_text()
    if CARD_BEGIN not in text or CARD_END not in text:
        raise ValueError(f"{path} lacks the {CARD_BEGIN} ... {CARD_END} markers")
    head, rest = text.split(CARD_BEGIN, 1)
    path.write_text(head + block + rest.split(CARD_END, 1)[1])


def score(row: dict[str, Any], split: str, key: str = "top1") -> float | None:
    return (row["splits"].get(split) or {}).get(key)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _with_ci(row: dict[str, Any], split: str) -> str:
    m = row["splits"].get(split)
    if not m:
        return "–"
    lo, hi = m["top1_ci95"]
    return f"**{m['top1']:.1%}** [{lo:.1%}, {hi:.1%}]"


def _breed(row: dict[str, Any], split: str, breed: str) -> str:
    b = (row["splits"].get(split) or {}).get("per_breed", {}).get(breed)
    if not b or b["n"] < MIN_PHOTOS_PER_BREED:
        return "–"
    return f"{b['top1']:.1%} ({b['n']})"


def sort_key(row: dict[str, Any]) -> tuple[float, float]:
    return (-(score(row, "unseen") or 0.0), -(score(row, "web") or 0.0))


def not_rerun(rows: list[dict[str, Any]]) -> list[str]:
    done = {r["run"] for r in rows if r.get("_dir")}
    return sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem not in done)


def label_noise_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The unseen photos judged by eye to carry a doubtful ImageNet label (kept, not relabelled)."""
    if not LABEL_NOTES.is_file():
        return []
    notes = yaml.safe_load(LABEL_NOTES.read_text()) or []
    lines = [
        "",
        "## `unseen` mistakes that look like ImageNet label noise",
        "",
        f"Judged by eye from the mistake galleries (`runs/<name>/mistakes_unseen.png`), listed in "
        f"`{LABEL_NOTES.relative_to(REPO_ROOT)}`. They stay in the test split with their "
        "ImageNet label and count as mistakes in every figure above.",
        "",
        "| photo | ImageNet label | what it looks like | runs that miss it |",
        "|---|---|---|---:|",
    ]
    for note in notes:
        missed = sum(
            any(m["photo"] == note["photo"] for m in r["splits"]["unseen"].get("mistakes", []))
            for r in rows
            if "unseen" in r["splits"]
        )
        lines.append(
            f"| `{note['photo']}` | {note['label']} | {note['looks_like']} "
            f"| {missed} of {len(rows)} |"
        )
    return lines


def render(rows: list[dict[str, Any]], machine: str, threads: int | None) -> str:
    """The results page; ``threads`` None = speed not measured (no latency column)."""
    speed = (
        f"- Speed: TorchScript, {threads} threads, measured one model after another in the same "
        f"run on {machine}; latency = median of 30 single-photo calls (model only)."
        if threads
        else "- Speed: not measured in this run (`--no-speed`: the shared CPU was busy)."
    )
    latency = " latency b=1 (ms) |" if threads else ""
    lines = [
        "# Results",
        "",
        "Generated by `flock /tmp/breedrec-cpu.lock python -m training.reports.results` from "
        "`runs/*/metrics.json`. Do not edit by hand.",
        "",
        "- **unseen**: 250 ImageNet-*validation* photos (25 per breed) that no ImageNet backbone "
        "has seen: the honest test. **web**: 391 web photos (mostly beagles and golden "
        "retrievers, often ~275×183 thumbnails). Both through the service runtime (the "
        "artifact's own preprocessing and backend). Neither is used to train, tune or select "
        "anything but the ship rule (`training/release/ship.py`).",
        "- Top-1 with its 95% Wilson interval. **Served** = right AND accepted by the run's "
        "open-set rule (the shipped scorer `breed_mass_x_softmax`, threshold = 2% quantile of "
        "evenly spaced train photos, `training/evaluate.py`); refused = share of the split's "
        'photos called "not one of my breeds". **cats / other dogs refused**: the same rule on '
        "the 240 cats and 390 photos of 65 other dog breeds in `ood/`.",
        f"- **val (leaky)**: {VAL_CAVEAT}. Kept only to compare with the original table.",
        speed,
        "",
        "| Run | Experiment | Input | Params (M) | unseen top-1 [95% CI] | unseen served "
        "| unseen refused | web top-1 [95% CI] | web Beagle | web Golden | cats refused "
        f"| other dogs refused | val top-1 (leaky) |"
        f"{latency} train time | Reproduce |",
        "|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|"
        + ("---:|" if threads else "")
        + "---:|---|",
    ]
    for r in sorted(rows, key=sort_key):
        train = "–" if not r.get("steps") else f"{r['train_wall_s'] / 60:.1f} min"
        stopped = " (stopped at budget)" if r.get("stopped_early") else ""
        lines.append(
            f"| {r['run']} | {r['experiment']}{stopped} | {r['input_size']} | {r['params_m']:.2f} "
            f"| {_with_ci(r, 'unseen')} | {_pct(score(r, 'unseen', 'served'))} "
            f"| {_pct(score(r, 'unseen', 'refused'))} | {_with_ci(r, 'web')} "
            f"| {_breed(r, 'web', WEB_BREEDS[0])} | {_breed(r, 'web', WEB_BREEDS[1])} "
            f"| {_pct(r.get('ood', {}).get('cats'))} | {_pct(r.get('ood', {}).get('dogs'))} "
            f"| {_pct(score(r, 'val'))} |"
            + (f" {r.get('latency_ms', '–')} |" if threads else "")
            + f" {train} "
            f"| `{r['command']}` |"
        )
    missing = not_rerun(rows)
    if missing:
        lines += [
            "",
            "Configs not re-run yet (no row): "
            + ", ".join(f"`{m}`" for m in missing)
            + ". Their earlier val-only rows are in the git history of this file.",
        ]
    lines += ["", "## Per breed on `unseen` (25 photos each; one photo = 4 points)", ""]
    lines.append("| Run | " + " | ".join(NAMES) + " |")
    lines.append("|---|" + "---:|" * len(NAMES))
    for r in sorted(rows, key=sort_key):
        per = (r["splits"].get("unseen") or {}).get("per_breed", {})
        lines.append(
            f"| {r['run']} | "
            + " | ".join(_pct((per.get(n) or {}).get("top1")) for n in NAMES)
            + " |"
        )
    top = min((r for r in rows if r.get("_dir")), key=sort_key)
    lines += [
        "",
        f"Confusion matrices of the top row (`{top['run']}`): "
        "[unseen](confusion_unseen.png), [web](confusion_web.png). Every run's matrices and "
        "mistake galleries (photos: not committed) are in `runs/<name>/`.",
    ]
    lines += label_noise_lines(rows)
    lines += [
        "",
        f"Train time: wall time of the training steps on {machine} (feature caching and "
        "evaluation not included), on a CPU shared with other jobs.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = load_runs(runs_root())
    if not rows:
        print(f"results failed: no evaluated runs under {runs_root()}", file=sys.stderr)
        return 1
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    if SHIPPED.is_file() and not args.no_shipped:
        rows.append(shipped_row(SHIPPED))
    ood = None if args.no_ood else load_sets(data_root(), [c.wnid for c in IMAGEWOOF_CLASSES])
    for row in rows:
        artifact = row.get("_artifact") or Path(row["_dir"]) / "model.pt"
        if artifact.is_file() and ood is not None:
            row["ood"] = ood_refusals(artifact, ood)
        if not args.no_speed and artifact.is_file():
            row.update(measure_speed(artifact, threads))
    if rows[-1].get("_artifact") == SHIPPED:
        update_card(CARD, card_block(rows[-1]))
    top = min((r for r in rows if r.get("_dir")), key=sort_key)
    for split in ("unseen", "web"):
        if split in top["splits"]:
            m = top["splits"][split]
            title = f"{top['run']} on {split}: top-1 {m['top1']:.1%} (n={m['n']})"
            plot_confusion(
                np.array(m["confusion"]), args.out.parent / f"confusion_{split}.png", title
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(rows, hardware(), None if args.no_speed else threads))
    print(f"wrote {args.out} ({len(rows)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
