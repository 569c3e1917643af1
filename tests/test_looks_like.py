"""``looks_like``: the table of the other classes an answer may name, checked against ImageNet's
own class list, and the rule on crafted output rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from model.backends import load_backend
from model.looks_like import KINDS, OTHER_BY_WNID, OTHER_CLASSES, looks_like_of, scores_of
from model.metadata import IMAGEWOOF_CLASSES, LooksLikeRule, ModelMetadata
from model.predictor import Predictor
from tests.support.artifacts import shipped_metadata
from tests.support.open_set_fixtures import coloured_jpeg, tiny_artifact, tiny_dataset
from training.lab.answers import _Computed
from training.lab.looks_like_scoring import LooksLikeRules, calibrated_rule, ood_dog_folder
from training.lab.ood_breeds import OOD_DOG_CLASSES

LABRADOR, TABBY, SPORTS_CAR, BEAGLE = 208, 281, 817, 162
TEN = {c.wnid for c in IMAGEWOOF_CLASSES}


def test_the_table_is_imagenets_dogs_wild_canids_and_cats_less_the_ten() -> None:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    for c in OTHER_CLASSES:
        assert info.index_to_label_name(c.imagenet_index) == c.wnid, c
        lemmas = [n.strip().lower() for n in info.index_to_description(c.imagenet_index).split(",")]
        assert c.name.lower() in lemmas, f"{c.name!r} is none of ImageNet's names {lemmas}"
        assert c.name[0].isupper() and c.kind in KINDS
    by_kind = {k: {c.imagenet_index for c in OTHER_CLASSES if c.kind == k} for k in KINDS}
    ten = {c.imagenet_index for c in IMAGEWOOF_CLASSES}
    assert by_kind["dog"] == set(range(151, 269)) - ten  # ImageNet's 118 dog breeds
    assert len(by_kind["dog"]) == 109
    # Wolves, coyote, dhole, African hunting dog, foxes; not the dingo (one of the ten), not
    # the hyena (276, no canid).
    assert by_kind["wild"] == set(range(269, 281)) - {273, 276}
    assert by_kind["cat"] == set(range(281, 294))  # domestic cats, then the wild ones
    assert not TEN & set(OTHER_BY_WNID)
    assert len(OTHER_BY_WNID) == len(OTHER_CLASSES)


def test_every_ood_dog_folder_maps_to_classes_of_the_table() -> None:
    from tests.support.data import imagewoof_dir

    for wnids in OOD_DOG_CLASSES.values():
        assert set(wnids) <= set(OTHER_BY_WNID)
    root = imagewoof_dir()
    if root is not None and (root.parent / "ood" / "dogs").is_dir():
        folders = {p.name for p in (root.parent / "ood" / "dogs").iterdir() if p.is_dir()}
        assert folders == set(OOD_DOG_CLASSES)
        some = next((root.parent / "ood" / "dogs" / "labrador").iterdir())
        assert ood_dog_folder(some) == "labrador"


RULE = LooksLikeRule("other_class", unknown_margin=0.0, unsure_margin=1.0)


def _meta(rule: LooksLikeRule = RULE) -> ModelMetadata:
    return dataclasses.replace(shipped_metadata(), looks_like=rule)


def _row(breed: dict[int, float], imagenet: dict[int, float]) -> np.ndarray:
    row = np.zeros(1010, dtype=np.float32)
    for index, value in breed.items():
        row[index] = value
    for index, value in imagenet.items():
        row[10 + index] = value
    return row


def _answers(rows: list[np.ndarray], meta: ModelMetadata | None = None) -> list:
    return Predictor(_Computed(meta or _meta())).interpret(np.stack(rows))


def test_an_unknown_dog_of_another_breed_gets_its_name_and_a_cat_its_kind() -> None:
    labrador, cat, car = _answers(
        [_row({}, {LABRADOR: 10.0}), _row({}, {TABBY: 10.0}), _row({}, {SPORTS_CAR: 10.0})]
    )
    assert labrador.verdict == cat.verdict == car.verdict == "unknown"
    assert labrador.looks_like is not None and cat.looks_like is not None
    assert (labrador.looks_like.wnid, labrador.looks_like.kind) == ("n02099712", "dog")
    assert labrador.looks_like.name == "Labrador retriever"
    # Its share of the softmax over the 1000 ImageNet logits.
    assert labrador.looks_like.confidence == pytest.approx(np.exp(10) / (np.exp(10) + 999), 1e-5)
    assert cat.looks_like.kind == "cat"
    assert car.looks_like is None  # its best class outside the ten is no dog, canid or cat
    body = labrador.to_dict()
    assert body["looks_like"] == {
        "wnid": "n02099712",
        "name": "Labrador retriever",
        "kind": "dog",
        "confidence": labrador.looks_like.confidence,
        "kind_confidence": labrador.looks_like.kind_confidence,
    }
    assert car.to_dict()["looks_like"] is None


def test_a_sure_answer_never_carries_it_and_an_unsure_one_only_past_its_margin() -> None:
    sure_beagle = _row({2: 20.0}, {BEAGLE: 12.0})
    # Known by the breed head, but the ImageNet head is on a Labrador: unsure, not sure.
    unsure_labrador = _row({2: 8.0}, {LABRADOR: 10.0, BEAGLE: 4.0})
    # Unsure too (19 other dogs share the rest), but a margin of only 0.5 < 1.0.
    crowd = dict.fromkeys(range(210, 229), 5.8)
    unsure_close = _row({2: 8.0}, {**crowd, LABRADOR: 6.0, BEAGLE: 5.5})
    sure, clear, close = _answers([sure_beagle, unsure_labrador, unsure_close])
    assert sure.verdict == "sure" and sure.looks_like is None
    assert clear.verdict == close.verdict == "unsure"
    assert clear.looks_like is not None and clear.looks_like.wnid == "n02099712"
    assert clear.breed is not None  # the verdict and the named breed are unchanged
    assert close.looks_like is None
    never = _answers([unsure_labrador], _meta(dataclasses.replace(RULE, unsure_margin=None)))
    assert never[0].looks_like is None


def test_an_unknown_photo_the_ten_outweigh_is_not_called_another_breed() -> None:
    [beagle_like] = _answers([_row({}, {BEAGLE: 10.0, LABRADOR: 9.0})])
    assert beagle_like.verdict == "unknown" and beagle_like.looks_like is None


def test_it_names_only_the_best_class_outside_the_ten() -> None:
    brown_bear = 294  # no dog, canid or cat: a photo it outweighs gets none
    [bear_like] = _answers([_row({}, {brown_bear: 8.0, TABBY: 7.0})])
    assert bear_like.verdict == "unknown" and bear_like.looks_like is None


def test_kind_confidence_is_the_share_of_every_class_of_that_kind() -> None:
    tiger_cat, persian = 282, 283
    [cat] = _answers([_row({}, {TABBY: 8.0, tiger_cat: 8.0, persian: 8.0, LABRADOR: 7.0})])
    assert cat.looks_like is not None and cat.looks_like.kind == "cat"
    total = 3 * np.exp(8.0) + np.exp(7.0) + 996  # every other logit is 0
    cat_classes = sum(c.kind == "cat" for c in OTHER_CLASSES)  # the other cats count too
    cats = (3 * np.exp(8.0) + cat_classes - 3) / total
    assert cat.looks_like.kind_confidence == pytest.approx(cats, 1e-5)
    assert cat.looks_like.confidence == pytest.approx(np.exp(8.0) / total, 1e-5)
    assert cat.looks_like.certainty == cat.looks_like.kind_confidence  # "it's a cat"
    chesapeake = 209  # another retriever: the dogs' share is two classes', a breed's one
    [dog] = _answers([_row({}, {LABRADOR: 8.0, chesapeake: 8.0})])
    assert dog.looks_like is not None
    dogs = sum(c.kind == "dog" for c in OTHER_CLASSES)
    total = 2 * np.exp(8.0) + 998
    assert dog.looks_like.kind_confidence == pytest.approx((2 * np.exp(8.0) + dogs - 2) / total)
    assert dog.looks_like.certainty == dog.looks_like.confidence


def test_a_house_cat_taken_for_a_lynx_is_still_called_a_cat() -> None:
    lynx = 287
    [cat_like_lynx] = _answers([_row({}, {lynx: 8.0, TABBY: 7.0})])
    assert cat_like_lynx.looks_like is not None
    assert (cat_like_lynx.looks_like.name, cat_like_lynx.looks_like.kind) == ("Lynx", "cat")


def test_no_rule_no_looks_like_and_old_metadata_reads_without_one() -> None:
    off = _answers([_row({}, {LABRADOR: 10.0})], _meta(LooksLikeRule()))
    assert off[0].looks_like is None and off[0].to_dict()["looks_like"] is None
    meta = _meta()
    raw = meta.to_json().replace('"looks_like"', '"ignored"')
    assert ModelMetadata.from_json(raw).looks_like == LooksLikeRule()
    assert ModelMetadata.from_json(meta.to_json()) == meta


def test_scores_need_the_imagenet_logits() -> None:
    meta = dataclasses.replace(_meta(), outputs=dataclasses.replace(_meta().outputs, imagenet=None))
    with pytest.raises(ValueError, match="ImageNet logits"):
        scores_of(np.zeros((1, 10), dtype=np.float32), meta)
    with pytest.raises(ValueError, match="ImageNet logits"):
        looks_like_of(np.zeros((1, 10), dtype=np.float32), meta, np.array(["unknown"]))


def test_the_unsure_margin_lets_at_most_the_budget_of_genuine_photos_through() -> None:
    meta = _meta(LooksLikeRule())
    rows = [_row({2: 8.0}, {LABRADOR: 4.0 + i, BEAGLE: 4.0}) for i in range(10)]  # unsure
    rows += [_row({2: 20.0}, {BEAGLE: 12.0})] * 190  # sure
    outputs = np.stack(rows)
    rule = calibrated_rule(outputs, meta, LooksLikeRules(genuine_budget=0.01))
    assert rule.method == "other_class" and rule.unknown_margin == 0.0
    answers = _answers(list(outputs), _meta(rule))
    assert sum(a.looks_like is not None for a in answers) == 2  # 1% of 200
    # A budget that lets every unsure photo through still needs the ten outweighed.
    loose = calibrated_rule(outputs, meta, LooksLikeRules(genuine_budget=0.4))
    assert loose.unsure_margin == 0.0


def test_the_release_calibrates_writes_into_the_copies_and_the_report_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny lab: green photos are the ten, red ones ImageNet's tabby, blue ones another
    dog breed (ImageNet 200, Tibetan terrier)."""
    from training.release import looks_like as release
    from training.release import open_set
    from training.reports import looks_like as report

    monkeypatch.setenv("BREED_CACHE_DIR", str(tmp_path / "cache"))
    data = tiny_dataset(tmp_path / "data")
    artifact, copy = tiny_artifact(tmp_path / "tiny.pt"), tiny_artifact(tmp_path / "tiny.onnx")
    for path in (artifact, copy):
        argv = ["--artifact", str(path), "--data-dir", str(data), "--write"]
        assert open_set.main([*argv, "--out-dir", str(tmp_path / "open_set")]) == 0
    argv = ["--artifact", str(artifact), "--data-dir", str(data), "--write", "--copies", str(copy)]
    assert release.main(argv) == 0
    meta, copied = load_backend(artifact, 1).metadata, load_backend(copy, 1).metadata
    assert meta.looks_like.method == "other_class" and meta.looks_like.unsure_margin is not None
    assert copied.looks_like == meta.looks_like
    assert copied.metrics["looks_like"] == meta.metrics["looks_like"]
    figures = meta.metrics["looks_like"]["figures"]
    assert figures["cats"]["looks_like"] == figures["dogs"]["looks_like"] == 1.0
    assert figures["val"]["looks_like"] == 0.0  # photos of the ten: none
    assert figures["dogs"]["unmapped"] == 12 and "named_right_mapped" not in figures["dogs"]

    predictor = Predictor(load_backend(copy, 1))
    red = coloured_jpeg(tmp_path / "r.jpg", "red", seed=78).read_bytes()
    blue = coloured_jpeg(tmp_path / "b.jpg", "blue", seed=79).read_bytes()
    cat, dog = predictor.predict_bytes(red), predictor.predict_bytes(blue)
    assert cat.looks_like is not None and cat.looks_like.wnid == "n02123045"  # tabby
    assert dog.looks_like is not None and dog.looks_like.wnid == "n02097474"

    out = tmp_path / "looks_like.md"
    argv = ["--artifact", str(artifact), "--data-dir", str(data), "--out", str(out)]
    assert report.main(argv) == 0
    page = out.read_text()
    assert "| cats said to be cats (`ood/cats`) | " in page
    assert "| looks_like on photos of the ten" not in page  # no unseen, web here
    assert "## Other dog breeds (`ood/dogs`), per breed" in page
    # What the rule could name at most: the artifact, and each architecture the lab has
    # ImageNet weights for (a made-up architecture has none).
    from training.lab.weights import LOCAL_WEIGHT_PACKAGES, local_weight_file

    assert "| shipped (fine-tuned) | " in page and "| channel-mean pretrained" not in page
    for arch in LOCAL_WEIGHT_PACKAGES:
        assert (f"| {arch} pretrained, before fine-tuning" in page) == bool(local_weight_file(arch))


def test_the_pretrained_reference_is_the_imagenet_head_with_its_own_ten_as_breed_rows() -> None:
    from training.lab.pretrained_reference import PretrainedReference
    from training.lab.weights import WeightsUnavailableError

    meta = shipped_metadata()
    try:
        reference = PretrainedReference(meta)
    except WeightsUnavailableError as exc:
        pytest.skip(f"no local ImageNet weights: {exc}")
    size = meta.preprocessing.input_size
    batch = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    rows = reference.run(batch)
    start, end = meta.outputs.imagenet
    own = [c.imagenet_index for c in meta.classes]
    assert rows.shape == (2, 10 + 1000) and (start, end) == (10, 1010)
    np.testing.assert_allclose(rows[:, :10], rows[:, start:end][:, own], rtol=1e-5, atol=1e-5)
