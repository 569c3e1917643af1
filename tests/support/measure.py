"""Serving measurements for closing notes: accuracy through /predict, latency, worker RSS.

    flock /tmp/breedrec-cpu.lock .venv/bin/python -m tests.support.measure [--full-val]

Starts the service under real gunicorn (defaults of gunicorn.conf.py: 2 workers, threads =
cores // workers), then: top-1 accuracy of /predict on the 200-photo stratified val sample
(or the whole val split with --full-val), the latency of one request (median / p90 of
sequential requests, measured by the client, localhost), and each worker's resident memory.
Caveat for every Imagewoof val number: ~96% of Imagewoof val are ImageNet-1k train photos.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image
from tqdm import tqdm

from tests.support.data import imagewoof_dir, stratified_val_sample
from tests.support.server import start_gunicorn


def _memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS (shared pages split between sharers) and private memory of one process."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    private = fields["Private_Clean"] + fields["Private_Dirty"]
    return {
        "rss": round(fields["Rss"], 1),
        "pss": round(fields["Pss"], 1),
        "private": round(private, 1),
    }


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def _accuracy(base_url: str, items: list[tuple[Path, str]]) -> float:
    def ok(item: tuple[Path, str]) -> bool:
        path, wnid = item
        response = requests.post(
            f"{base_url}/predict", files={"image": (path.name, path.read_bytes())}, timeout=60
        )
        response.raise_for_status()
        return response.json()["top_k"][0]["wnid"] == wnid

    with ThreadPoolExecutor(max_workers=2) as pool:
        hits = list(tqdm(pool.map(ok, items), total=len(items), desc="accuracy", file=sys.stderr))
    return sum(hits) / len(hits)


def _latency(base_url: str, data: bytes, runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs + 3):  # 3 warm-up requests, not counted
        started = time.perf_counter()
        response = requests.post(
            f"{base_url}/predict", files={"image": ("p.jpg", data)}, timeout=60
        )
        response.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    times = sorted(times[3:])
    return {
        "median_ms": round(statistics.median(times), 1),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 1),
        "runs": runs,
    }


def _all_val(root: Path) -> list[tuple[Path, str]]:
    with (root / "index.csv").open(newline="") as fh:
        return [(root / r["path"], r["wnid"]) for r in csv.DictReader(fh) if r["split"] == "val"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-val", action="store_true", help="also the whole val split")
    parser.add_argument("--runs", type=int, default=50, help="sequential latency requests")
    parser.add_argument("--model-uri", default="", help="MODEL_URI (default: the shipped .pt)")
    args = parser.parse_args()
    root = imagewoof_dir()
    if root is None:
        print("error: Imagewoof not found (set BREED_DATA_DIR)", file=sys.stderr)
        return 2
    sample = stratified_val_sample(root, 200, seed=0)
    env = {"WEB_CONCURRENCY": "2", "MODEL_THREADS": ""}
    if args.model_uri:
        env["MODEL_URI"] = args.model_uri
    server = start_gunicorn(env)
    try:
        ready = requests.get(f"{server.base_url}/readyz", timeout=5).json()
        results: dict = {"model": ready["model"], "workers": 2}
        results["worker_mb_after_start"] = [_memory_mb(p) for p in _workers(server.process.pid)]
        results["val200_top1"] = round(_accuracy(server.base_url, sample), 4)
        if args.full_val:
            everything = _all_val(root)
            results["val_full_top1"] = round(_accuracy(server.base_url, everything), 4)
            results["val_full_n"] = len(everything)
        photo = sample[0][0].read_bytes()
        big = io.BytesIO()
        Image.open(sample[0][0]).convert("RGB").resize((4000, 3000)).save(big, "JPEG", quality=90)
        results["latency_val_photo"] = {
            "bytes": len(photo),
            **_latency(server.base_url, photo, args.runs),
        }
        results["latency_4000x3000_jpeg"] = {
            "bytes": big.tell(),
            **_latency(server.base_url, big.getvalue(), args.runs),
        }
        results["worker_mb_after_requests"] = [_memory_mb(p) for p in _workers(server.process.pid)]
        results["master_mb"] = _memory_mb(server.process.pid)
    finally:
        server.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
