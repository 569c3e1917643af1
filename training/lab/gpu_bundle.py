"""Pack what a GPU machine needs to train ``inputs: images`` runs into one small folder.

    python -m training.lab.gpu_bundle --configs training/configs/real_photo_ft.yaml ... --out DIR

The folder holds: the lab's code (``training/``, ``model/*.py``), the configs (weights pointed
at a half-precision copy of the pretrained weights in the folder), ``data.tgz`` (the train
photos the runs train on, shorter side ``--side`` px, WebP ``--quality``: held-out photos are
left behind) and ``run.sh``. Wheels the machine lacks go in ``DIR/whl`` (pip download). There:

    bash DIR/run.sh [seconds per run]     # trains --train-only, slims checkpoints into $OUT

Back here, copy ``<run>.ckpt`` to ``runs/<run>/checkpoint.ckpt`` and finish the run with
``python -m training.train --config ... --resume`` (export, calibration, evaluation).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tarfile
from pathlib import Path

import torch
from PIL import Image

from model.metadata import IMAGEWOOF_CLASSES
from training.lab.config import load_experiment
from training.lab.data import imagewoof_root, load_split
from training.lab.holdout import split_train
from training.lab.paths import REPO_ROOT
from training.lab.weights import create_pretrained

RUN_SH = """\
# Trains the bundled configs (--train-only) and slims their checkpoints into $OUT.
set -o pipefail
G=$(cd "$(dirname "$0")" && pwd)
if ls $G/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site \
    $G/whl/*.whl || exit 1
fi
mkdir -p /tmp/gpu && tar xzf $G/data.tgz -C /tmp/gpu || exit 1
export PYTHONPATH=/tmp/site BREED_DATA_DIR=/tmp/gpu/data BREED_RUNS_DIR=/tmp/runs \\
  BREED_CACHE_DIR=/tmp/cache PYTHONUNBUFFERED=1
sed -i "s#__BUNDLE__#$G#" $G/configs/*.yaml
cd $G/code
for c in $G/configs/*.yaml; do
  name=$(basename $c .yaml)
  timeout ${1:-240} python3 -m training.train --config $c --train-only > $OUT/$name.log 2>&1
  echo "$name rc=$?"
  [ -f /tmp/runs/$name/checkpoint.ckpt ] && \\
    python3 -m training.lab.checkpoint --slim /tmp/runs/$name/checkpoint.ckpt $OUT/$name.ckpt
done
"""


def compact(path: Path, side: int, quality: int) -> bytes:
    with Image.open(path) as img:
        img = img.convert("RGB")
        scale = side / min(img.size)
        if scale < 1:
            size = (round(img.width * scale), round(img.height * scale))
            img = img.resize(size, Image.LANCZOS)
        out = io.BytesIO()
        img.save(out, "WEBP", quality=quality)
        return out.getvalue()


def build(configs: list[Path], out: Path, side: int, quality: int) -> None:
    exps = [load_experiment(c) for c in configs]
    (out / "configs").mkdir(parents=True, exist_ok=True)
    code = out / "code"
    shutil.rmtree(code, ignore_errors=True)
    shutil.copytree(
        REPO_ROOT / "training", code / "training", ignore=shutil.ignore_patterns("__pycache__")
    )
    (code / "model").mkdir()
    for source in (REPO_ROOT / "model").glob("*.py"):
        shutil.copy2(source, code / "model" / source.name)
    weights = {}
    for exp in exps:
        if exp.arch not in weights:
            state = create_pretrained(exp.arch, exp.weights).state_dict()
            half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
            torch.save(half, out / f"{exp.arch}_fp16.pt")
            weights[exp.arch] = f"__BUNDLE__/{exp.arch}_fp16.pt"
        text = [
            line
            for line in Path(configs[exps.index(exp)]).read_text().splitlines()
            if not line.startswith("weights:")
        ]
        text.append(f"weights: {weights[exp.arch]}")
        (out / "configs" / f"{exp.name}.yaml").write_text("\n".join(text) + "\n")
    root = imagewoof_root()
    photos = {s.path for exp in exps for s in split_train(exp)[0]}
    index = ["path,wnid,breed,split"]
    with tarfile.open(out / "data.tgz", "w:gz") as tar:
        for sample in load_split(None, "train"):
            webp = str(sample.path.relative_to(root).with_suffix(".webp"))
            breed = IMAGEWOOF_CLASSES[sample.label].name
            index.append(f"{webp},{sample.wnid},{breed},train")
            if sample.path in photos:
                data = compact(sample.path, side, quality)
                info = tarfile.TarInfo(f"data/imagewoof/{webp}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        listing = ("\n".join(index) + "\n").encode()
        info = tarfile.TarInfo("data/imagewoof/index.csv")
        info.size = len(listing)
        tar.addfile(info, io.BytesIO(listing))
    (out / "run.sh").write_text(RUN_SH)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {len(photos)} photos, {total / 2**20:.1f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pack image-input runs for a GPU machine.")
    parser.add_argument("--configs", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--side", type=int, default=160, help="shorter side of the photos (px)")
    parser.add_argument("--quality", type=int, default=60, help="WebP quality")
    args = parser.parse_args(argv)
    try:
        build(args.configs, args.out, args.side, args.quality)
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"gpu_bundle failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
