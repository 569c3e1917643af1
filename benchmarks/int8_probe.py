"""Probe: what would static int8 quantization buy? (An experiment, not the served path.)

    .venv/bin/python -m benchmarks.int8_probe [--calib 100] [--val 0]   # ~1-2 min, CPU lock

Quantizes the served ONNX artifact to int8 (QDQ, per-channel weights, ONNX Runtime's
``quantize_static``) calibrated on Imagewoof TRAIN photos, then compares it with the fp32
artifact on val photos (accuracy, top-1 agreement) and times both at batch 1, one thread.
Not shipped: calibration needs photos, which the container build does not have, so an int8
artifact would have to come from the lab (e.g. via MODEL_URI=s3://...).

Caveat: ~96% of Imagewoof val are ImageNet-1k train photos, so ImageNet-pretrained
backbones have seen them (val accuracy is optimistic).
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench import DEFAULT_ONNX, LOCK_PATH, ROOT, ensure_onnx
from benchmarks.photos import data_dir
from model.backends import load_backend
from model.predictor import Predictor


def _rows(split: str, seed: int) -> list[dict[str, str]]:
    with (data_dir() / "imagewoof" / "index.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    random.Random(seed).shuffle(rows)
    return rows


def quantize(fp32: Path, out: Path, calib: list[np.ndarray]) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            return None if row is None else {"input": row[None]}

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )


def _median_ms(run, batch: np.ndarray, repeats: int = 100) -> float:
    for _ in range(10):
        run(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calib", type=int, default=100, help="train photos for calibration")
    parser.add_argument("--val", type=int, default=0, help="val photos (0: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "int8_probe.json")
    parser.add_argument("--no-lock", action="store_true", help="do not take the CPU lock")
    args = parser.parse_args(argv)
    if not (data_dir() / "imagewoof" / "index.csv").is_file():
        print(f"int8_probe: no Imagewoof data under {data_dir()}", file=sys.stderr)
        return 2
    with open(LOCK_PATH, "a") as lock:
        if not args.no_lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
        fp32_path = ensure_onnx(DEFAULT_ONNX)
        fp32 = Predictor(load_backend(fp32_path, threads=1))
        root = data_dir() / "imagewoof"
        train = _rows("train", 0)[: args.calib]
        calib = [fp32.preprocess((root / r["path"]).read_bytes()) for r in train]
        int8_path = Path(tempfile.mkdtemp()) / "int8.onnx"
        quantize(fp32_path, int8_path, calib)
        int8 = Predictor(load_backend(int8_path, threads=1))
        val = _rows("val", 1)[: args.val or None]
        wnids = [c.wnid for c in fp32.metadata.classes]
        x = np.stack([fp32.preprocess((root / r["path"]).read_bytes()) for r in val])
        y = np.array([wnids.index(r["wnid"]) for r in val])
        outs = {}
        for name, predictor in (("fp32", fp32), ("int8", int8)):
            logits = np.concatenate(
                [predictor.backend.run(x[i : i + 32]) for i in range(0, len(x), 32)]
            )
            outs[name] = logits[:, :10].argmax(1)
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "calibration_train_photos": args.calib,
            "val_photos": len(val),
            "fp32_accuracy": round(float((outs["fp32"] == y).mean()) * 100, 2),
            "int8_accuracy": round(float((outs["int8"] == y).mean()) * 100, 2),
            "top1_agreement": round(float((outs["fp32"] == outs["int8"]).mean()) * 100, 2),
            "fp32_ms": _median_ms(fp32.backend.run, x[:1]),
            "int8_ms": _median_ms(int8.backend.run, x[:1]),
            "int8_mb": round(int8_path.stat().st_size / 2**20, 1),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
