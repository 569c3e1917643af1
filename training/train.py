"""Run one experiment end to end: train (if it has a loss), export, calibrate, evaluate.

    python -m training.train --config training/configs/kd_lite0.yaml [--resume] [--max-minutes M]
    torchrun --nproc_per_node=N -m training.train --config ...     # DDP (gloo CPU / nccl GPU)

Writes ``runs/<name>/``: ``checkpoint.ckpt`` (resumable), ``model.pt`` (the artifact, with the
lab's open-set rule and its honest metrics in its metadata), ``metrics.json`` (what
``training.reports.results`` reads), confusion matrices and mistake galleries per split (photos: not
for git). ``--max-minutes`` pauses a long run at a checkpoint; ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.backends import load_backend
from training.lab.checkpoint import load_checkpoint
from training.lab.config import Experiment, load_experiment
from training.lab.data import has_feedback, load_split
from training.lab.distributed import cleanup_distributed, hardware, setup_distributed
from training.lab.evaluate import VAL_CAVEAT, calibrate_rule, evaluate_artifact
from training.lab.fit import fit
from training.lab.holdout import split_train
from training.lab.network import BreedClassifier, build_breed_model
from training.lab.paths import run_dir
from training.lab.weights import default_preprocessing
from training.lab.wise import wise_ft
from training.release.artifact_metadata import rewrite_metadata
from training.release.export import breed_metadata, export_onnx, export_torchscript

log = logging.getLogger(__name__)


def describe_training(exp: Experiment, facts: dict[str, Any]) -> str:
    if exp.wise_alphas:
        return (
            f"WiSE-FT: (1 - a) x zero-shot + a x run {exp.init_from}, a = {facts['wise_alpha']:g}"
            f" (best held-out train top-1 of {exp.wise_alphas})"
        )
    if exp.loss == "none":
        return "ImageNet-1k only (no Imagewoof training): the ten breed rows of its head"
    what = {
        "ce": "cross-entropy",
        "kd": f"KD from {', '.join(exp.teachers)}",
        "barlow_twins": "Barlow Twins (labels unused)",
        "joint": f"cross-entropy + {exp.bt_weight} x Barlow Twins",
    }[exp.loss]
    return (
        f"Imagewoof train ({facts['train_photos']} photos), {what}, {facts['steps']} steps x "
        f"{exp.batch_size}, trainable_stages={exp.trainable_stages}, inputs={exp.inputs}"
    )


def finish(
    exp: Experiment, model: BreedClassifier, facts: dict[str, Any], command: str
) -> dict[str, Any]:
    """Export the artifact, store its open-set rule, evaluate it as served, write metrics."""
    out = run_dir(exp.name)
    spec = default_preprocessing(exp.arch, exp.input_size)
    metadata = breed_metadata(
        f"{exp.arch}-imagewoof-{exp.name}",
        exp.arch,
        exp.version,
        spec,
        trained_on=describe_training(exp, facts),
        weights_origin=f"ImageNet-1k pretrained {exp.arch} (weights={exp.weights})"
        + (f", then run {exp.init_from}" if exp.init_from else ""),
        extra={"config": exp.model_dump()},
    )
    artifact = export_torchscript(model.cpu().eval(), metadata, out / "model.pt")
    started = time.perf_counter()
    backend = load_backend(artifact)
    held_out = split_train(exp)[1] or None
    rule = calibrate_rule(artifact, backend, held_out)
    metadata = dataclasses.replace(metadata, open_set=rule)
    names = [*exp.eval_splits, *(["feedback"] if has_feedback() else [])]
    splits = {split: load_split(None, split) for split in dict.fromkeys(names)}
    honest = evaluate_artifact(artifact, splits, out, metadata, backend)
    summary = {
        split: {k: m[k] for k in ("n", "top1", "top1_ci95", "served", "refused")}
        for split, m in honest.items()
    }
    del backend
    metadata = dataclasses.replace(metadata, metrics={**summary, "caveat": VAL_CAVEAT})
    rewrite_metadata(artifact, metadata)
    if exp.onnx:
        export_onnx(model, metadata, out / "model.onnx")
    metrics = {
        "run": exp.name,
        "experiment": exp.experiment or exp.loss,
        "arch": exp.arch,
        "command": command,
        "budget": exp.budget,
        "notes": exp.notes,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "size_mb": round(artifact.stat().st_size / 1e6, 2),
        "input_size": spec.input_size,
        "hardware": hardware(),
        "torch": torch.__version__,
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "eval_wall_s": round(time.perf_counter() - started, 1),
        "open_set": dataclasses.asdict(metadata.open_set),
        "splits": honest,
        **facts,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def run(
    exp: Experiment,
    config_path: Path | None = None,
    resume: bool = False,
    max_minutes=None,
    train_only: bool = False,
) -> dict[str, Any] | None:
    """Train + finish; returns the metrics on the main process of a finished run, else None.

    ``train_only``: stop at the checkpoint (e.g. on a GPU machine without the evaluation
    photos); ``--resume`` on the finished checkpoint later exports and evaluates it.
    """
    ctx = setup_distributed()
    random.seed(exp.seed)
    np.random.seed(exp.seed)
    torch.manual_seed(exp.seed)
    try:
        samples, _ = split_train(exp)
        model = build_breed_model(exp.arch, exp.weights)
        if exp.init_from:
            start = load_checkpoint(run_dir(exp.init_from) / "checkpoint.ckpt")
            model.load_state_dict(start["model"])
        facts: dict[str, Any] = {"finished": True, "steps": 0, "train_wall_s": 0.0}
        if exp.wise_alphas:
            zero = build_breed_model(exp.arch, exp.weights)
            model, mix = wise_ft(zero, model, exp.wise_alphas, split_train(exp)[1], exp.arch)
            facts.update(mix)
        if exp.loss != "none":
            facts = fit(exp, model, samples, ctx, resume, max_minutes)
        facts["world_size"] = ctx.world_size
        if not facts["finished"]:
            log.info("%s paused at step %d: rerun with --resume", exp.name, facts["steps"])
            return None
        if not ctx.is_main or train_only:
            return None
        command = "python -m training.train --config " + shlex.quote(str(config_path or "<config>"))
        return finish(exp, model, facts, command)
    finally:
        cleanup_distributed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train + export + evaluate one experiment.")
    parser.add_argument("--config", type=Path, required=True, help="training/configs/<x>.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--max-minutes", type=float, default=None, help="pause after M minutes")
    parser.add_argument(
        "--train-only", action="store_true", help="checkpoint only: no export or evaluation"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        exp = load_experiment(args.config)
        metrics = run(exp, args.config, args.resume, args.max_minutes, args.train_only)
    except Exception as exc:  # CLI: one-line cause, non-zero exit; traceback at DEBUG
        log.debug("train failed", exc_info=True)
        print(f"train failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if metrics:
        for split, m in metrics["splits"].items():
            lo, hi = m["top1_ci95"]
            tag = " (leaky)" if split == "val" else ""
            print(
                f"{exp.name}: {split}{tag} top-1 {m['top1']:.1%} [{lo:.1%}, {hi:.1%}]"
                f", served {m['served']:.1%}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
