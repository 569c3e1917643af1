"""The lab's parts on generated data: splits and the fast.ai download (checksum, safe
extraction), the data report, the network split, the offline ImageNet weights, the config
schema (typo -> one-line error), the cache key, the feature cache, checkpoint resume and the
honest-metrics report.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.metadata import IMAGEWOOF_CLASSES
from training.lab.data import (
    DataError,
    Sample,
    class_counts,
    fetch_imagewoof,
    load_split,
    safe_extract,
    scan_folder,
)
from training.lab.network import build_breed_model, split_backbone
from training.lab.weights import default_preprocessing


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
    from training.reports.data_report import main

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
            prefix, tail = split_backbone(model.backbone, stages)
            torch.testing.assert_close(tail(prefix(x)), expected)
    with pytest.raises(ValueError, match="trainable_stages"):
        split_backbone(model.backbone, 99)


# --- pretrained weights -----------------------------------------------------------------------


def test_weight_mapping_loads_strictly_and_zero_shot_head_is_rows() -> None:
    from training.lab.weights import create_pretrained, local_weight_file, map_lukemelas_to_timm

    model = create_pretrained("tf_efficientnet_lite0").eval()  # strict load inside
    zero_shot = build_breed_model("tf_efficientnet_lite0").eval()
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
    from training.lab.transforms import EvalTransform
    from training.lab.weights import create_pretrained

    samples = _val_samples(per_class=3)
    spec = default_preprocessing("tf_efficientnet_lite0")
    batch = torch.stack([EvalTransform(spec)(s.path.read_bytes()) for s in samples])
    model = create_pretrained("tf_efficientnet_lite0").eval()
    with torch.no_grad():
        predicted = model(batch).argmax(1).tolist()
    truth = [IMAGEWOOF_CLASSES[s.label].imagenet_index for s in samples]
    hits = sum(p == t for p, t in zip(predicted, truth, strict=True))
    assert hits >= 0.5 * len(samples), (predicted, truth)  # chance: 0.1%; 1000 classes


# --- one config schema ------------------------------------------------------------------------


def test_every_shipped_config_parses() -> None:
    from training.lab.config import load_experiment

    configs = sorted((Path(__file__).resolve().parent.parent / "training" / "configs").glob("*"))
    names = {load_experiment(path).name for path in configs}
    assert {"zeroshot_lite0", "lite2_ft", "kd_lite0", "ssl_bt_lite0", "joint_bt_lite0"} <= names


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nsteps: 3\nlrr: 0.1\n", "lrr: unknown key"),
        ("name: x\nsteps: 3\nlr: 1e-3\n", "lr: Input should be a valid number"),  # YAML string
        ("name: x\nsteps: three\n", "steps: Input should be a valid integer"),
        ("name: x\nloss: ce\n", "exactly one of 'steps' and 'epochs'"),
        ("name: x\nsteps: 3\nloss: kd\n", "needs 'teachers'"),
        ("- a list\n", "expected a mapping"),
        ("name: [unclosed\n", "x.yaml"),
    ],
)
def test_config_problems_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    from training.lab.config import ConfigError, load_experiment

    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_train_cli_refuses_a_typo_with_one_line_and_exit_1(tmp_path: Path, capsys) -> None:
    from training.train import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps: 2\nlearning_rate: 0.1\n")
    assert main(["--config", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"train failed: ConfigError: {bad}: learning_rate: unknown key"]


# --- one cache key, one feature cache, one checkpoint -----------------------------------------


def test_cache_key_covers_every_part() -> None:
    from training.lab.cache import cache_key

    paths = [Path("a.jpg"), Path("b.jpg")]
    base = cache_key({"prefix": "x", "size": 224}, paths)
    assert base == cache_key({"size": 224, "prefix": "x"}, list(paths))  # order of parts
    assert base != cache_key({"prefix": "y", "size": 224}, paths)
    assert base != cache_key({"prefix": "x", "size": 256}, paths)
    assert base != cache_key({"prefix": "x", "size": 224}, paths[::-1])  # photo order
    assert base != cache_key({"prefix": "x", "size": 224}, paths[:1])


@pytest.fixture()
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_data: Path) -> Path:
    monkeypatch.setenv("BREED_DATA_DIR", str(tiny_data))
    monkeypatch.setenv("BREED_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("BREED_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_feature_cache_is_reused_and_keyed_by_weights_views_and_photos(lab_env: Path) -> None:
    from training.lab.distributed import DistContext
    from training.lab.features import Views, feature_maps

    samples = load_split(None, "train")[:6]
    prefix, _ = split_backbone(build_breed_model("tf_efficientnet_lite0").backbone, 1)
    views = Views("eval", default_preprocessing("tf_efficientnet_lite0", 64), (False, True))
    maps = feature_maps(prefix, samples, views, DistContext(), "fp32")
    assert maps.shape == (6, 2, 192, 2, 2) and maps.dtype == torch.float16
    folders = lambda: sorted((lab_env / "cache" / "features").iterdir())  # noqa: E731
    first = folders()
    part = first[0] / "part-00000.pt"
    stamp = part.stat().st_mtime_ns
    torch.testing.assert_close(feature_maps(prefix, samples, views, DistContext(), "fp32"), maps)
    assert part.stat().st_mtime_ns == stamp and folders() == first  # reused, not recomputed
    with torch.no_grad():
        next(prefix.parameters()).mul_(0.5)  # other weights -> other cache
    feature_maps(prefix, samples, views, DistContext(), "fp32")
    feature_maps(prefix, samples[:5], views, DistContext(), "fp32")
    assert len(folders()) == 3


def _tiny_experiment(**overrides):
    from training.lab.config import parse_experiment

    raw = {
        "name": "tiny",
        "input_size": 64,
        "steps": 5,
        "batch_size": 8,
        "loss": "ce",
        "precision": "fp32",
        "map_crop": 1,
        "map_flip": True,
        "eval_splits": [],
        **overrides,
    }
    return parse_experiment(raw)


def test_paused_and_resumed_training_equals_one_uninterrupted_run(lab_env: Path) -> None:
    from training.lab.checkpoint import load_checkpoint
    from training.lab.distributed import DistContext
    from training.lab.fit import fit
    from training.lab.paths import run_dir

    samples = load_split(None, "train")
    straight = build_breed_model("tf_efficientnet_lite0")
    done = fit(_tiny_experiment(name="straight"), straight, samples, DistContext())
    assert done["finished"] and done["steps"] == 5

    resumed, calls = build_breed_model("tf_efficientnet_lite0"), 0
    while True:  # max_minutes=0: pause after every step, then resume from the checkpoint
        calls += 1
        facts = fit(_tiny_experiment(name="paused"), resumed, samples, DistContext(), True, 0.0)
        if facts["finished"]:
            break
        resumed = build_breed_model("tf_efficientnet_lite0")
    assert calls == 5 and facts["steps"] == 5
    state = load_checkpoint(run_dir("paused") / "checkpoint.ckpt")
    assert state["step"] == 5 and state["config"]["name"] == "paused"
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, msg=key)
    assert not torch.equal(
        straight.breed_head.weight, build_breed_model("tf_efficientnet_lite0").breed_head.weight
    )


# --- honest metrics ---------------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    from training.lab.evaluate import wilson

    assert wilson(0, 10)[0] == 0.0 and wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    lo, hi = wilson(232, 250)  # 92.8% of 250: about +-3 points
    assert lo == pytest.approx(0.8889, abs=1e-3) and hi == pytest.approx(0.9540, abs=1e-3)


def test_split_metrics_served_accuracy_needs_right_and_accepted() -> None:
    import dataclasses

    from model.metadata import OpenSetRule
    from training.lab.evaluate import split_metrics
    from training.release.export import breed_metadata

    meta = breed_metadata("t", "a", "1", default_preprocessing("tf_efficientnet_lite0"))
    meta = dataclasses.replace(meta, open_set=OpenSetRule("max_logit", 5.0))
    labels = np.array([0, 0, 1, 1, 2])
    outputs = np.zeros((5, 1010), dtype=np.float32)
    # photo: predicted class, max logit (accepted iff >= 5)
    for i, (pred, top) in enumerate([(0, 9), (0, 1), (1, 9), (2, 9), (2, 1)]):
        outputs[i, pred] = top
    m = split_metrics(outputs, labels, meta)
    assert m["n"] == 5 and m["top1"] == 0.8  # photo 3 wrong
    assert m["served"] == 0.4  # photos 0 and 2: right and accepted
    assert m["refused"] == 0.4  # photos 1 and 4
    assert m["per_breed"]["Shih-Tzu"] == {"n": 2, "top1": 1.0}
    assert m["confusion"][1][2] == 1 and sum(map(sum, m["confusion"])) == 5
    assert m["top1_ci95"][0] < 0.8 < m["top1_ci95"][1]


def _row(run: str, unseen: float, web: float, val: float) -> dict:
    def split(top1: float, n: int) -> dict:
        return {
            "n": n,
            "top1": top1,
            "top1_ci95": [top1 - 0.03, top1 + 0.03],
            "served": top1 - 0.02,
            "refused": 0.02,
            "confusion": np.eye(10, dtype=int).tolist(),
            "per_breed": {"Beagle": {"n": 170, "top1": web}},
            "mistakes": [],
        }

    return {
        "run": run,
        "experiment": "e",
        "arch": "tf_efficientnet_lite0",
        "input_size": 224,
        "params_m": 4.67,
        "command": f"python -m training.train --config {run}.yaml",
        "steps": 0,
        "train_wall_s": 0.0,
        "_dir": Path(run),
        "splits": {"unseen": split(unseen, 250), "web": split(web, 391), "val": split(val, 3767)},
    }


def test_results_table_sorts_by_unseen_then_web_and_labels_val_leaky(tmp_path: Path) -> None:
    from training.reports.results_page import render

    rows = [
        _row("high_val", 0.90, 0.95, 0.99),
        _row("best", 0.93, 0.80, 0.95),
        _row("tie_better_web", 0.93, 0.90, 0.90),
    ]
    text = render(rows, "CPU test", 2)
    table = [line for line in text.splitlines() if line.startswith("| ") and "config" in line]
    assert [line.split(" | ")[0][2:] for line in table] == ["tie_better_web", "best", "high_val"]
    assert "val top-1 (leaky)" in text and "**93.0%** [90.0%, 96.0%]" in text
    assert "| 90.0% (170) |" in text  # web beagles, >= 20 photos
    assert "Configs not re-run yet" in text and "`lite1_ft`" in text


@pytest.mark.parametrize("threads", [2, None])
def test_results_table_has_a_latency_column_only_when_speed_was_measured(threads) -> None:
    from training.reports.results_page import render

    row = {**_row("run_a", 0.93, 0.90, 0.95), "latency_ms": 12.5}
    row["ood"] = {"cats": 0.991, "dogs": 0.853}
    text = render([row], "CPU test", threads)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| Run |"))
    body = next(line for line in lines if line.startswith("| run_a |"))
    assert header.count("|") == body.count("|")  # every row fills every column
    assert ("latency b=1 (ms)" in header) == (threads is not None)
    assert ("| 12.5 |" in body) == (threads is not None)
    assert ("not measured" in text) == (threads is None)
    assert "| 99.1% | 85.3% |" in body  # cats, then other dogs refused


def test_a_stored_run_config_with_a_retired_unset_option_still_reads() -> None:
    from training.lab.config import ConfigError, parse_experiment, stored_experiment

    saved = parse_experiment({"name": "old", "steps": 3}).model_dump()
    assert stored_experiment({**saved, "layer_decay": None}, "run old").name == "old"
    with pytest.raises(ConfigError, match="layer_decay: unknown key"):
        stored_experiment({**saved, "layer_decay": 0.7}, "run old")  # it would change the run
