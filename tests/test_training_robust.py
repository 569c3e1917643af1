"""Robustness mechanisms of the lab on generated data: photo-like augmentation, held-out
train photos, EMA + slim checkpoint (train on one machine, finish on another) and WiSE-FT.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_training import _tiny_experiment, make_dataset
from training.lab.data import load_split
from training.lab.network import build_breed_model


@pytest.fixture()
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = make_dataset(tmp_path / "imagewoof", {"train": 4})
    monkeypatch.setenv("BREED_DATA_DIR", str(data))
    monkeypatch.setenv("BREED_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("BREED_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_degrade_keeps_the_size_and_changes_the_pixels() -> None:
    from training.lab.photo_augment import degrade

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (224, 300, 3), dtype=np.uint8))
    out = degrade(img, random.Random(1), p_downscale=1.0, p_jpeg=1.0, p_blur=1.0)
    assert out.size == img.size and out.mode == "RGB"
    # a 100-250 px thumbnail + JPEG + blur of noise loses most of its fine detail
    assert np.asarray(out, dtype=np.float32).std() < 0.7 * np.asarray(img, np.float32).std()
    untouched = degrade(img, random.Random(1), p_downscale=0.0, p_jpeg=0.0, p_blur=0.0)
    assert np.array_equal(np.asarray(untouched), np.asarray(img))


def test_photo_transform_gives_a_normalised_training_view(tmp_path: Path) -> None:
    from training.lab.photo_augment import PhotoTransform
    from training.lab.weights import default_preprocessing

    path = tmp_path / "a.jpg"
    Image.new("RGB", (275, 183), (200, 120, 40)).save(path)
    view = PhotoTransform(default_preprocessing("tf_efficientnet_lite0", 96))(path.read_bytes())
    assert view.shape == (3, 96, 96) and view.dtype == torch.float32
    assert float(view.min()) >= -1.01 and float(view.max()) <= 1.01  # mean = std = 0.5


def test_holdout_is_every_kth_photo_and_disjoint(lab_env: Path) -> None:
    from training.lab.holdout import split_train

    every = load_split(None, "train")
    train, held = split_train(_tiny_experiment(holdout_every=4))
    assert [s.path for s in held] == [s.path for s in every[3::4]]
    assert len(train) + len(held) == len(every) and not {s.path for s in train} & {
        s.path for s in held
    }
    assert split_train(_tiny_experiment())[1] == []


def test_ema_run_slims_and_finishes_from_the_slim_checkpoint(lab_env: Path) -> None:
    from training.lab.checkpoint import load_checkpoint, save_checkpoint, slim_checkpoint
    from training.lab.distributed import DistContext
    from training.lab.fit import fit
    from training.lab.paths import run_dir

    exp = _tiny_experiment(name="ema", inputs="images", augment="photo", ema_decay=0.5)
    exp = exp.model_copy(update={"map_crop": None, "map_flip": False, "workers": 0})
    trained = build_breed_model("tf_efficientnet_lite0")
    assert fit(exp, trained, load_split(None, "train"), DistContext())["finished"]
    full = load_checkpoint(run_dir("ema") / "checkpoint.ckpt")
    for key, value in full["extra"]["ema"].items():  # the exported weights are the EMA
        torch.testing.assert_close(trained.state_dict()[key], value, msg=key)
    assert not torch.equal(full["model"]["breed_head.weight"], trained.breed_head.weight)

    slim = lab_env / "ema.slim"
    slim_checkpoint(run_dir("ema") / "checkpoint.ckpt", slim)
    state = load_checkpoint(slim)
    assert "optimizer" not in state and state["model"]["breed_head.weight"].dtype == torch.half
    assert slim.stat().st_size < 0.6 * (run_dir("ema") / "checkpoint.ckpt").stat().st_size
    save_checkpoint(run_dir("ema") / "checkpoint.ckpt", state)  # as copied back from a GPU
    finished = build_breed_model("tf_efficientnet_lite0")
    facts = fit(exp, finished, load_split(None, "train"), DistContext(), resume=True)
    assert facts["finished"] and facts["steps"] == exp.steps
    torch.testing.assert_close(
        finished.breed_head.weight, trained.breed_head.weight, atol=2e-3, rtol=1e-2
    )


def test_wise_interpolates_and_picks_alpha_on_held_out_photos(lab_env: Path) -> None:
    from training.lab.wise import interpolate, wise_ft

    zero = build_breed_model("tf_efficientnet_lite0")
    tuned = build_breed_model("tf_efficientnet_lite0")
    with torch.no_grad():
        tuned.breed_head.weight.add_(1.0)
    mid = interpolate(zero, tuned, 0.5)["breed_head.weight"]
    torch.testing.assert_close(mid, zero.breed_head.weight + 0.5)
    torch.testing.assert_close(
        interpolate(zero, tuned, 0.0)["breed_head.weight"], zero.breed_head.weight
    )

    with torch.no_grad():  # "fine-tuned" = a breed head that always says class 3
        tuned.breed_head.weight.zero_()
        tuned.breed_head.bias.copy_(torch.arange(10) == 3)
    photos = [s for s in load_split(None, "train") if s.label == 3]
    mixed, facts = wise_ft(zero, tuned, [0.0, 1.0], photos, "tf_efficientnet_lite0")
    assert facts["wise_alpha"] == 1.0 and facts["wise_held_out_top1"]["1"] == 1.0
    with pytest.raises(ValueError, match="holdout_every"):
        wise_ft(zero, mixed, [0.5], [], "tf_efficientnet_lite0")


def test_new_keys_are_checked() -> None:
    from training.lab.config import ConfigError, parse_experiment

    with pytest.raises(ConfigError, match="wise_alphas needs init_from"):
        parse_experiment({"name": "w", "loss": "none", "wise_alphas": [0.5]})
    with pytest.raises(ConfigError, match="inputs: images"):
        parse_experiment({"name": "p", "steps": 1, "augment": "photo"})


def test_gpu_bundle_packs_only_the_photos_trained_on(lab_env: Path) -> None:
    import tarfile

    from training.lab.gpu_bundle import build
    from training.lab.holdout import split_train

    config = lab_env / "real_x.yaml"
    config.write_text("name: real_x\nsteps: 2\ninputs: images\nholdout_every: 4\n")
    build([config], lab_env / "bundle", side=64, quality=60)
    with tarfile.open(lab_env / "bundle" / "data.tgz") as tar:
        names = [n for n in tar.getnames() if n.endswith(".webp")]
        index = tar.extractfile("data/imagewoof/index.csv").read().decode().splitlines()
    trained = split_train(_tiny_experiment(holdout_every=4))[0]
    assert sorted(Path(n).stem for n in names) == sorted(s.path.stem for s in trained)
    assert len(index) == 1 + len(load_split(None, "train"))  # every row: held-out stay listed
    bundled = (lab_env / "bundle" / "configs" / "real_x.yaml").read_text()
    assert "weights: __BUNDLE__/tf_efficientnet_lite0_fp16.pt" in bundled
    assert (lab_env / "bundle" / "code" / "training" / "lab" / "fit.py").is_file()
