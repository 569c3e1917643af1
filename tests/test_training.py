"""The training lab end to end on a tiny generated data set, plus its data and weight helpers.

Generated images (a few per class) → data report → 2 training steps → export → evaluate →
load in the service runtime → same prediction as the eager model; a 2-process torchrun (gloo);
the fast.ai download's checksum / extraction logic on a tarball made here.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from model.metadata import IMAGEWOOF_CLASSES
from model.predictor import Predictor
from training.data import (
    DataError,
    Sample,
    class_counts,
    fetch_imagewoof,
    load_split,
    safe_extract,
    scan_folder,
)
from training.engine import TrainNet, build_breed_model, split_backbone, warmup_cosine
from training.export import default_preprocessing

REPO = Path(__file__).resolve().parent.parent


def make_dataset(root: Path, per_class: dict[str, int]) -> Path:
    """root/{split}/<wnid>/*.jpg: class-dependent colours + noise, random sizes."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label, cls in enumerate(IMAGEWOOF_CLASSES):
            folder = root / split / cls.wnid
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                h, w = rng.integers(100, 200), rng.integers(100, 260)
                base = np.array([label * 25, 255 - label * 25, (label * 70) % 255])
                pixels = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{cls.wnid}_{k}.jpg", quality=85)
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("imagewoof"), {"train": 4, "val": 2})


@pytest.fixture()
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BREED_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("BREED_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


# --- data -------------------------------------------------------------------------------------


def test_folder_scan_and_index_csv(tiny_data: Path, tmp_path: Path) -> None:
    train = load_split(tiny_data, "train")
    assert len(train) == 40 and class_counts(train) == [4] * 10
    assert all(s.wnid == IMAGEWOOF_CLASSES[s.label].wnid for s in train)
    # An index.csv, when present, is authoritative.
    copy = tmp_path / "indexed"
    (copy / "imagewoof").mkdir(parents=True)
    (copy / "imagewoof" / "train").symlink_to(tiny_data / "train")
    rows = ["path,wnid,breed,split"] + [
        f"train/{s.wnid}/{s.path.name},{s.wnid},x,train" for s in train[:5]
    ]
    (copy / "imagewoof" / "index.csv").write_text("\n".join(rows) + "\n")
    indexed = load_split(copy, "train")
    assert [s.path.name for s in indexed] == [s.path.name for s in train[:5]]


def test_unknown_wnid_and_missing_folder_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "n99999999").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "n99999999" / "a.jpg")
    with pytest.raises(DataError, match="not one of the 10"):
        scan_folder(tmp_path)
    with pytest.raises(DataError, match="not found"):
        scan_folder(tmp_path / "nope")


def _archive(tmp_path: Path, top: str = "imagewoof2-160", evil: bool = False) -> Path:
    archive = tmp_path / "src" / "imagewoof2-160.tgz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), "red").save(buf, "JPEG")
        wnid = IMAGEWOOF_CLASSES[0].wnid
        for split in ("train", "val"):
            info = tarfile.TarInfo(f"{top}/{split}/{wnid}/x.JPEG")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
        if evil:
            info = tarfile.TarInfo("../escaped.txt")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return archive


def test_fetch_verifies_checksum_extracts_and_caches(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    md5 = hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest()
    base = archive.parent.as_uri() + "/"
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="MD5"):
        fetch_imagewoof("160", cache, base, accepted_md5=("0" * 32,))
    assert not (cache / archive.name).exists()  # a bad download is not kept
    folder = fetch_imagewoof("160", cache, base, accepted_md5=(md5,))
    assert folder.name == "imagewoof2-160"
    assert [s.label for s in load_split(folder, "val")] == [0]
    archive.unlink()  # cached: no second download
    assert fetch_imagewoof("160", cache, base, accepted_md5=(md5,)) == folder
    with pytest.raises(DataError, match="unknown Imagewoof size"):
        fetch_imagewoof("999", cache)


def test_extract_refuses_paths_outside_the_destination(tmp_path: Path) -> None:
    archive = _archive(tmp_path, evil=True)
    with pytest.raises(tarfile.OutsideDestinationError):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_data_report(tiny_data: Path, tmp_path: Path) -> None:
    from training.report import main

    assert main(["--data", str(tiny_data), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "data_report.md").read_text()
    assert "| n02089973 | English foxhound | 4 | 2 | 6 | 100% |" in text
    assert "every class is within 10%" in text
    assert (tmp_path / "data_counts.png").stat().st_size > 1000


# --- model pieces -----------------------------------------------------------------------------


def test_split_backbone_composes_to_the_backbone() -> None:
    model = build_breed_model("tf_efficientnet_lite0", weights="none").eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = model.backbone(x)
        for stages in (0, 1, 2, -1):
            trunk, tail = split_backbone(model.backbone, stages)
            torch.testing.assert_close(tail(trunk(x)), expected)
    with pytest.raises(ValueError, match="trainable_stages"):
        split_backbone(model.backbone, 99)


def test_warmup_cosine_schedule() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, warmup_steps=4, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:])) and lrs[-1] < 0.05


# --- the whole pipeline -----------------------------------------------------------------------


def _config(tmp: Path, data: Path, name: str, **overrides: object) -> Path:
    cfg = {
        "name": name,
        "arch": "tf_efficientnet_lite0",
        "data": str(data),
        "input_size": 96,
        "epochs": 1,
        "max_steps": 2,
        "batch_size": 8,
        "workers": 0,
        "onnx": True,
        **overrides,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_train_export_evaluate_serve(tiny_data: Path, lab_env: Path) -> None:
    from training.train import TrainConfig, run

    config = _config(lab_env, tiny_data, "tiny")
    metrics = run(TrainConfig.from_yaml(config), config)
    run_dir = lab_env / "runs" / "tiny"
    assert metrics["steps"] == 2 and metrics["n_images"] == 20
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["top1"] == metrics["top1"] and on_disk["command"].endswith("tiny.yaml")
    for png in ("confusion.png", "mistakes.png"):
        assert (run_dir / png).stat().st_size > 1000

    # The artifact, loaded by the service runtime, answers like the eager trained model.
    image = (tiny_data / "val" / IMAGEWOOF_CLASSES[3].wnid).iterdir().__next__().read_bytes()
    served = Predictor.from_uri(str(run_dir / "model.pt"), threads=1)
    onnx = Predictor.from_uri(str(run_dir / "model.onnx"), threads=1)
    assert served.metadata.metrics["top1"] == metrics["top1"]
    assert served.metadata.preprocessing == default_preprocessing("tf_efficientnet_lite0", 96)
    assert served.metadata.outputs.imagenet == (10, 1010)
    row = served.preprocess(image)
    # Eager model = a fresh network with the trained weights from the run's checkpoint.
    eager = build_breed_model("tf_efficientnet_lite0", weights="none")
    trunk, tail = split_backbone(eager.backbone, 1)
    state = torch.load(run_dir / "checkpoint.ckpt", weights_only=False)["net"]
    TrainNet(trunk, tail, eager, from_features=True).load_state_dict(state)
    with torch.no_grad():
        expected = eager.eval()(torch.from_numpy(row[None]))
    for predictor in (served, onnx):
        raw = predictor.backend.run(row[None])
        np.testing.assert_allclose(raw, expected.numpy(), atol=1e-3)
        got = predictor.predict_bytes(image)
        want = predictor.interpret(expected.numpy())[0]
        assert got.top_k[0].wnid == want.top_k[0].wnid


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(tiny_data: Path, lab_env: Path) -> None:
    from training.train import TrainConfig, run

    config = _config(lab_env, tiny_data, "resume", epochs=1, max_steps=None, onnx=False)
    first = run(TrainConfig.from_yaml(config), config)
    config = _config(lab_env, tiny_data, "resume", epochs=2, max_steps=None, onnx=False)
    second = run(TrainConfig.from_yaml(config), config, resume=True)
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert second["history"][0] == first["history"][0]
    assert second["steps"] == 2 * first["steps"]


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnot_a_key: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "training.train", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("train failed: ValueError")
    assert "not_a_key" in proc.stderr


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiny_data: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, tiny_data, "ddp", onnx=False, batch_size=4)
    env = {
        **os.environ,
        "BREED_RUNS_DIR": str(tmp_path / "runs"),
        "BREED_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "-m", "training.train", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DDP rank 1/2" in proc.stderr
    metrics = json.loads((tmp_path / "runs" / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 2


# --- pretrained weights -----------------------------------------------------------------------


def test_weight_mapping_loads_strictly_and_zero_shot_head_is_rows() -> None:
    from training.export import zero_shot_classifier
    from training.weights import create_pretrained, local_weight_file, map_lukemelas_to_timm

    model = create_pretrained("tf_efficientnet_lite0").eval()  # strict load inside
    zero_shot = zero_shot_classifier("tf_efficientnet_lite0").eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x)
        out = zero_shot(x)
    rows = [c.imagenet_index for c in IMAGEWOOF_CLASSES]
    torch.testing.assert_close(out[:, :10], full[:, rows], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[:, 10:], full, atol=1e-4, rtol=1e-4)

    # The same tensors in the PyTorch-native efficientnet_lite0 (symmetric padding, BN eps
    # 1e-5) load but compute something else: the mapping targets the TF port on purpose.
    import timm

    source = torch.load(local_weight_file("tf_efficientnet_lite0"), weights_only=True)
    wrong = timm.create_model("efficientnet_lite0").eval()
    wrong.load_state_dict(map_lukemelas_to_timm(source, wrong.state_dict()))
    with torch.no_grad():
        assert (wrong(x) - full).abs().max() > 0.1
    with pytest.raises(ValueError, match=r"differ in size|cannot map"):
        map_lukemelas_to_timm(source, timm.create_model("tf_efficientnet_lite1").state_dict())


def _val_samples(per_class: int) -> list[Sample]:
    try:
        samples = load_split(None, "val")
    except DataError:
        pytest.skip("Imagewoof not found (set BREED_DATA_DIR or put it in ../shared/data)")
    picked: dict[int, list[Sample]] = {}
    for sample in samples:
        picked.setdefault(sample.label, [])
        if len(picked[sample.label]) < per_class:
            picked[sample.label].append(sample)
    return [s for group in picked.values() for s in group]


@pytest.mark.data
def test_mapped_weights_recognise_real_breeds() -> None:
    """Reference logits: the ImageNet head of the mapped model names the right breed class."""
    from training.transforms import EvalTransform
    from training.weights import create_pretrained

    samples = _val_samples(per_class=3)
    spec = default_preprocessing("tf_efficientnet_lite0")
    batch = torch.stack([EvalTransform(spec)(s.path.read_bytes()) for s in samples])
    model = create_pretrained("tf_efficientnet_lite0").eval()
    with torch.no_grad():
        predicted = model(batch).argmax(1).tolist()
    truth = [IMAGEWOOF_CLASSES[s.label].imagenet_index for s in samples]
    hits = sum(p == t for p, t in zip(predicted, truth, strict=True))
    assert hits >= 0.5 * len(samples), (predicted, truth)  # chance: 0.1%; 1000 classes
