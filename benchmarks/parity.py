"""Do the speed changes change answers? ONNX vs TorchScript, and JPEG draft vs full decode.

    .venv/bin/python -m benchmarks.parity          # ~3 min under the CPU lock

1. Every Imagewoof val photo through the service preprocessing, then the shipped
   TorchScript artifact and the ONNX artifact derived from it: accuracy of each, top-1
   agreement, largest logit difference.
2. Draft decode: the val photos are stored at 224 px on the short side, smaller than the
   256 px resize, so draft mode never triggers on them. To measure what it does to large
   uploads, a fixed sample is upscaled 4× (LANCZOS, JPEG quality 90, in memory: a
   phone-sized photo) and predicted with draft decoding (as served) and with a full decode.

Caveat: ~96% of Imagewoof val are ImageNet-1k train photos, so ImageNet-pretrained
backbones have seen them (val accuracy is optimistic).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmarks.harness.cpu_lock import cpu_lock
from model.backends import load_backend
from model.defaults import FP32_MODEL, SHIPPED_MODEL
from model.predictor import Predictor
from model.preprocessing import decode_image, preprocess_image
from training.reports.markdown import table

ROOT = Path(__file__).resolve().parents[1]
CAVEAT = (
    "~96% of Imagewoof val are ImageNet-1k train photos, so ImageNet-pretrained backbones "
    "have seen them (val accuracy is optimistic)."
)

DRAFT_COLUMNS = [
    "draft top-1",
    "full-decode top-1",
    "top-1 agreement",
    "max abs prob diff",
    "draft decode",
    "full decode",
]


def val_items(data_dir: Path) -> list[tuple[Path, str]]:
    index = data_dir / "imagewoof" / "index.csv"
    with index.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val"]
    return [(index.parent / r["path"], r["wnid"]) for r in rows]


def predict_rows(predictor: Predictor, rows: list[np.ndarray], batch: int = 32) -> np.ndarray:
    out = [predictor.backend.run(np.stack(rows[i : i + batch])) for i in range(0, len(rows), batch)]
    return np.concatenate(out)


def backend_parity(items: list[tuple[Path, str]], onnx_path: Path) -> dict:
    ts = Predictor(load_backend(SHIPPED_MODEL, threads=2))
    ort = Predictor(load_backend(onnx_path, threads=2))
    progress = tqdm(items, desc="preprocess", file=sys.stderr)
    rows = [ts.preprocess(path.read_bytes()) for path, _ in progress]
    labels = np.array([_label(ts, wnid) for _, wnid in items])
    ts_out, ort_out = predict_rows(ts, rows), predict_rows(ort, rows)
    start, end = ts.metadata.outputs.breed
    ts_top1, ort_top1 = ts_out[:, start:end].argmax(1), ort_out[:, start:end].argmax(1)
    return {
        "images": len(items),
        "torchscript_accuracy": round(float((ts_top1 == labels).mean()) * 100, 2),
        "onnx_accuracy": round(float((ort_top1 == labels).mean()) * 100, 2),
        "top1_agreement": round(float((ts_top1 == ort_top1).mean()) * 100, 2),
        "max_abs_logit_diff": float(np.abs(ts_out - ort_out).max()),
    }


def _label(predictor: Predictor, wnid: str) -> int:
    return [c.wnid for c in predictor.metadata.classes].index(wnid)


def draft_parity(items: list[tuple[Path, str]], onnx_path: Path, sample: int, scale: int) -> dict:
    predictor = Predictor(load_backend(onnx_path, threads=2))
    spec = predictor.metadata.preprocessing
    chosen = random.Random(0).sample(items, min(sample, len(items)))
    draft_rows, full_rows, labels = [], [], []
    draft_s = full_s = 0.0
    sizes = []
    for path, wnid in tqdm(chosen, desc="draft vs full", file=sys.stderr):
        img = Image.open(path).convert("RGB")
        big = img.resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        big.save(buf, format="JPEG", quality=90)
        data = buf.getvalue()
        sizes.append(big.size)
        t0 = time.perf_counter()
        draft_img = decode_image(data, min_side_hint=spec.resize_size)
        t1 = time.perf_counter()
        full_img = decode_image(data, min_side_hint=None)
        t2 = time.perf_counter()
        draft_s += t1 - t0
        full_s += t2 - t1
        draft_rows.append(preprocess_image(draft_img, spec))
        full_rows.append(preprocess_image(full_img, spec))
        labels.append(_label(predictor, wnid))
    labels_arr = np.array(labels)
    start, end = predictor.metadata.outputs.breed
    d_out, f_out = predict_rows(predictor, draft_rows), predict_rows(predictor, full_rows)
    d_top1, f_top1 = d_out[:, start:end].argmax(1), f_out[:, start:end].argmax(1)
    d_prob = _softmax(d_out[:, start:end])
    f_prob = _softmax(f_out[:, start:end])
    return {
        "images": len(chosen),
        "upscale": scale,
        "median_upload_px": "x".join(str(int(v)) for v in np.median(np.array(sizes), axis=0)),
        "draft_accuracy": round(float((d_top1 == labels_arr).mean()) * 100, 2),
        "full_decode_accuracy": round(float((f_top1 == labels_arr).mean()) * 100, 2),
        "top1_agreement": round(float((d_top1 == f_top1).mean()) * 100, 2),
        "max_abs_prob_diff": round(float(np.abs(d_prob - f_prob).max()), 4),
        "draft_decode_ms": round(draft_s / len(chosen) * 1000, 2),
        "full_decode_ms": round(full_s / len(chosen) * 1000, 2),
    }


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write(result: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity.json").write_text(json.dumps(result, indent=2) + "\n")
    b, d = result["backends"], result["draft"]
    lines = [
        "# Parity: do the speed changes change answers?",
        "",
        f"Written by `benchmarks/parity.py` on {result['date']}. Caveat: {CAVEAT}",
        "",
        f"## ONNX (served) vs TorchScript (shipped), {b['images']} val photos",
        "",
        table(
            ["TorchScript top-1", "ONNX top-1", "top-1 agreement", "max abs logit diff"],
            [
                (
                    f"{b['torchscript_accuracy']}%",
                    f"{b['onnx_accuracy']}%",
                    f"{b['top1_agreement']}%",
                    f"{b['max_abs_logit_diff']:.1e}",
                )
            ],
        ),
        "",
        f"## JPEG draft decode vs full decode, {d['images']} val photos upscaled {d['upscale']}× "
        f"(median {d['median_upload_px']} px, JPEG q90)",
        "",
        table(
            DRAFT_COLUMNS,
            [
                (
                    f"{d['draft_accuracy']}%",
                    f"{d['full_decode_accuracy']}%",
                    f"{d['top1_agreement']}%",
                    d["max_abs_prob_diff"],
                    f"{d['draft_decode_ms']} ms",
                    f"{d['full_decode_ms']} ms",
                )
            ],
        ),
        "",
        "Stated tolerance: accuracy within ±0.2 pp and top-1 agreement ≥ 99% for both.",
        "",
    ]
    text = "\n".join(lines)
    (out / "PARITY.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    from tests.support.photos import data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draft-sample", type=int, default=500)
    parser.add_argument("--upscale", type=int, default=4)
    parser.add_argument("--limit", type=int, default=0, help="first N val photos only (smoke)")
    parser.add_argument("--no-lock", action="store_true", help="do not take the CPU lock")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    args = parser.parse_args(argv)
    if not (data_dir() / "imagewoof" / "index.csv").is_file():
        print(f"parity: no Imagewoof data under {data_dir()} (set BREED_DATA_DIR)", file=sys.stderr)
        return 2
    with cpu_lock(not args.no_lock):
        onnx_path = FP32_MODEL
        items = val_items(data_dir())
        if args.limit:
            items = random.Random(1).sample(items, min(args.limit, len(items)))
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "backends": backend_parity(items, onnx_path),
            "draft": draft_parity(items, onnx_path, args.draft_sample, args.upscale),
        }
    print(write(result, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
