"""The static-int8 artifact: judged against fp32 by the paired rule, made from the .pt with its
own thresholds, served."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

import model.backends
from model.backends import (
    ArtifactError,
    OnnxBackend,
    fast_int8_is_exact,
    load_backend,
    onnx_session_options,
    read_onnx_metadata,
)
from model.defaults import FP32_MODEL, INT8_MODEL, SHIPPED_MODEL
from model.metadata import InputQuantization, ModelMetadata
from model.precision import SERVED_ANSWERS
from model.preprocessing import quantize_input
from tests.support.artifacts import shipped_metadata
from tests.support.data import imagewoof_dir
from tests.support.gunicorn_server import REPO_ROOT
from tests.support.photos import encode, jpeg_bytes
from tests.support.server import start_gunicorn
from training.lab.answers import Answers
from training.lab.data import scan_folder
from training.release import quantize as quantize_cli
from training.release.int8_acceptance import (
    ACCEPTANCE,
    SPLITS,
    Comparison,
    Paired,
    SplitAnswers,
    acceptance_record,
    compare,
    fails,
    judge,
    refusals,
    sign_test,
)
from training.release.int8_recipe import (
    Recipe,
    calibration_sample,
    distance,
    preprocessed,
    quantize,
    quantized_weight_nodes,
    tagged,
    take_input_quantization,
    with_float_weights,
    with_metadata,
)
from training.release.int8_rules import calibration_args, rule_parameters
from training.release.int8_variants import Measured, choose, paired_model_ms
from training.release.onnx_export import convert

WNIDS = [c.wnid for c in shipped_metadata().classes]


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fp32") / "model.onnx"
    convert(SHIPPED_MODEL, path)
    return path


def _generated_data_root(
    root: Path, per_class: int, constant_train: bool, ood: tuple[str, ...] = ("cats",)
) -> Path:
    """A data root in the lab's layout, filled with generated photos (textures, no dogs)."""
    seed = 0
    for split in ("train", "unseen", "web", "val"):
        for wnid in WNIDS:
            folder = root / "imagewoof" / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                seed += 1
                if split == "train" and constant_train:
                    data = _flat_jpeg(value=128)
                else:
                    data = jpeg_bytes(288, 224, seed=seed)
                (folder / f"{i}.jpg").write_bytes(data)
    for n, kind in enumerate(ood):
        folder = root / "ood" / kind / "Generated"
        folder.mkdir(parents=True)
        for i in range(per_class * 3):
            data = jpeg_bytes(256, 256, seed=10_000 * (n + 1) + i)
            (folder / f"{i}.jpg").write_bytes(data)
    return root


def _flat_jpeg(value: int) -> bytes:
    return encode(Image.new("RGB", (64, 64), (value, value, value)), "JPEG")


def test_sign_test_is_exact_and_one_sided() -> None:
    assert sign_test(0, 8) == pytest.approx(1 / 256)
    assert sign_test(3, 5) == pytest.approx(93 / 256)
    assert sign_test(8, 0) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(1, 9) == pytest.approx(11 / 1024)


@pytest.mark.parametrize(
    ("int8_wins", "fp32_wins", "failed"),
    [
        (0, 8, True),  # p = 0.0039
        (3, 5, False),  # p = 0.36
        (0, 4, False),  # p = 0.0625: too few pairs to tell
        (0, 5, True),  # p = 0.031
        (2, 8, False),  # p = 0.055
        (1, 9, True),  # p = 0.011
        (8, 0, False),  # int8 better
        (5, 5, False),
        (0, 0, False),  # no discordant pair
    ],
)
def test_int8_fails_a_criterion_only_when_it_loses_significantly(
    int8_wins: int, fp32_wins: int, failed: bool
) -> None:
    assert fails(int8_wins, fp32_wins, ACCEPTANCE.alpha) == failed


def _answers(top1: list[int], verdict: list[str]) -> Answers:
    classes = len(WNIDS)
    ranked = np.array([[t, *(c for c in range(classes) if c != t)] for t in top1])
    probs = np.full((len(top1), classes), 1 / classes)
    return Answers(ranked, probs, np.array(verdict, dtype=object), (None,) * len(top1))


def test_the_rule_pairs_each_photo_across_the_two_copies() -> None:
    """Made-up answers: on unseen + web int8 alone misses 8 breeds fp32 names right (and is
    alone right on none): refused. On cats it is alone right on 3, fp32 on 5: no evidence."""
    labels = np.zeros(20, dtype=np.int64)
    fp32_known = ["sure"] * 20
    int8_known = ["unknown"] * 4 + ["sure"] * 16  # 4 photos refused ...
    int8_top1 = [0] * 16 + [1] * 4  # ... and 4 others named wrong
    unseen = SplitAnswers(_answers([0] * 20, fp32_known), _answers(int8_top1, int8_known), labels)
    web = SplitAnswers(_answers([0] * 5, ["sure"] * 5), _answers([0] * 5, ["sure"] * 5), labels[:5])
    cats = SplitAnswers(
        _answers([0] * 10, ["unknown"] * 5 + ["sure"] * 3 + ["unsure"] * 2),
        _answers([0] * 10, ["sure"] * 5 + ["unknown"] * 3 + ["unsure"] * 2),
        None,
    )
    dogs = SplitAnswers(_answers([0] * 4, ["sure"] * 4), _answers([0] * 4, ["unsure"] * 4), None)
    criteria, missing = judge({"unseen": unseen, "web": web, "cats": cats, "dogs": dogs})
    assert missing == []
    named, cat, dog = criteria
    assert (named.photos, named.fp32_right, named.int8_right) == (25, 25, 17)
    assert (named.int8_only, named.fp32_only, named.passed) == (0, 8, False)
    assert named.p_value == pytest.approx(1 / 256, abs=1e-6)
    assert (cat.int8_only, cat.fp32_only, cat.passed) == (3, 5, True)
    assert (dog.int8_only, dog.fp32_only, dog.passed) == (4, 0, True)
    criteria, missing = judge({"unseen": unseen, "cats": cats, "dogs": dogs})
    assert missing == ["web"] and [c.criterion for c in criteria] == [
        "cats_unknown",
        "other_dogs_not_sure",
    ]


def test_compare_reads_each_copy_under_its_own_rules(fp32_onnx: Path, tmp_path: Path) -> None:
    """The "int8" copy here is the fp32 file whose own rule refuses every photo."""
    root = _generated_data_root(tmp_path / "data", 2, False, ood=("cats", "dogs"))
    refusing = tmp_path / "refusing.onnx"
    refusing.write_bytes(fp32_onnx.read_bytes())
    meta = OnnxBackend(fp32_onnx, threads=1).metadata
    rule = dataclasses.replace(meta.open_set, threshold=1e9)  # unknown below it: every photo
    with_metadata(refusing, dataclasses.replace(meta, open_set=rule))
    comparison = compare(fp32_onnx, refusing, root)
    assert {r.split for r in comparison.splits} == set(SPLITS)
    assert comparison.missing == []
    by_split = {r.split: r for r in comparison.splits}
    assert all(r.int8_known == 0.0 and r.top1_agreement == 100.0 for r in by_split.values())
    named, cats, dogs = comparison.criteria
    assert named.photos == 40 and named.int8_right == 0 and named.int8_only == 0
    assert cats.int8_right == cats.photos == 6 and dogs.int8_right == dogs.photos
    assert named.passed == (named.fp32_right < 5)  # 0 against n fails from n = 5
    without_dogs = compare(fp32_onnx, refusing, root, ("unseen", "web", "cats"))
    assert without_dogs.missing == ["dogs"]
    assert any("no photos" in p for p in refusals(without_dogs))


def test_float_weights_put_back_only_where_asked(fp32_onnx: Path, tmp_path: Path) -> None:
    """The 7-bit recipe's sensitive nodes keep float weights; every other node stays int8."""
    seven = tmp_path / "seven.onnx"
    rows = np.random.default_rng(0).normal(size=(4, 3, 224, 224)).astype(np.float32)
    quantize(fp32_onnx, seven, iter(rows), weight_bits=7)
    nodes = quantized_weight_nodes(seven)
    assert len(nodes) == 51  # 49 convolutions + the two heads
    mixed = tmp_path / "mixed.onnx"
    mixed.write_bytes(with_float_weights(seven, fp32_onnx, [nodes[1]]))
    before, after = _optimized_ops(seven, tmp_path), _optimized_ops(mixed, tmp_path)
    assert after.count("QLinearConv") == before.count("QLinearConv") - 1
    assert _float_convs(before) == 0 and _float_convs(after) == 1
    with pytest.raises(ValueError, match="no such node"):
        with_float_weights(seven, fp32_onnx, ["not-a-node"])


def test_input_quantization_is_onnx_quantize_linear_to_the_bit() -> None:
    """Ties round half to even, both ends saturate, as ONNX Runtime's own node computes."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    quantization = InputQuantization(scale=0.0078393230214715, zero_point=128)
    scale = np.float32(quantization.scale)
    node = helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"])
    graph = helper.make_graph(
        [node],
        "quantize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("q", TensorProto.UINT8, [None])],
        [
            numpy_helper.from_array(np.array(scale), "scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "zero_point"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(proto)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    steps = np.arange(-140, 140, dtype=np.float32)
    values = np.concatenate(
        [
            (steps + np.float32(0.5)) * scale,  # ties
            steps * scale,
            np.random.default_rng(0).uniform(-1.2, 1.2, 10_000).astype(np.float32),
        ]
    )
    want = session.run(None, {"x": values})[0]
    np.testing.assert_array_equal(quantize_input(values, quantization), want)
    assert want.min() == 0 and want.max() == 255


def test_the_input_quantization_moves_into_the_preprocessing_bit_for_bit(
    fp32_onnx: Path, tmp_path: Path
) -> None:
    """The int8 graph without its first QuantizeLinear, fed the preprocessing's uint8 rows,
    answers exactly as the graph with it fed float rows; the backend refuses a graph whose
    input type its metadata does not announce."""
    rows = np.random.default_rng(0).normal(size=(4, 3, 224, 224)).astype(np.float32)
    with_node, without = tmp_path / "with.onnx", tmp_path / "without.onnx"
    quantize(fp32_onnx, with_node, iter(rows), weight_bits=8)
    meta = tagged(shipped_metadata(), 8)
    with_metadata(with_node, meta)
    without.write_bytes(with_node.read_bytes())
    quantization = take_input_quantization(without)
    with pytest.raises(ArtifactError, match=r"takes tensor\(uint8\) input"):
        OnnxBackend(without, threads=1)
    spec = dataclasses.replace(meta.preprocessing, input_quantization=quantization)
    quantized_meta = dataclasses.replace(meta, preprocessing=spec)
    with_metadata(without, quantized_meta)
    photos = []
    for seed in range(6):
        photos.append(tmp_path / f"{seed}.jpg")
        photos[-1].write_bytes(jpeg_bytes(300, 260, seed=seed))
    (float_rows,) = preprocessed(photos, meta)
    (uint8_rows,) = preprocessed(photos, quantized_meta)
    assert float_rows.dtype == np.float32 and uint8_rows.dtype == np.uint8
    want = OnnxBackend(with_node, threads=1).run(float_rows)
    quantized_backend = OnnxBackend(without, threads=1)
    np.testing.assert_array_equal(quantized_backend.run(uint8_rows), want)
    np.testing.assert_array_equal(quantized_backend.run(float_rows), want)  # the lab's probes
    with pytest.raises(ArtifactError, match="not read by one QuantizeLinear"):
        take_input_quantization(without)  # done once: its input is no float any more
    times = paired_model_ms([with_node, without], photos[0], rounds=2)
    assert len(times) == 2 and min(times) > 0  # each timed on its own preprocessing's row


def _judged_by(passed: bool):
    """A stand-in for ``compare``: one criterion, won or lost by int8 (0 against 8)."""
    wins = (8, 0) if passed else (0, 8)
    criterion = Paired("breed_named_right", 40, 30, 30 + wins[0] - wins[1], *wins, 0.0, passed)

    def fake(fp32: Path, int8: Path, root: Path, *args: object, **kwargs: object) -> Comparison:
        return Comparison([criterion], [], [])

    return fake


@pytest.mark.parametrize("passed", [False, True], ids=["refused", "accepted"])
def test_build_writes_only_an_accepted_copy_marked_for_auto(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, passed: bool
) -> None:
    """The rules' calibration and the comparison stand in (their own tests cover them)."""
    root = _generated_data_root(tmp_path / "data", 1, False, ood=("cats", "dogs"))
    for index in (root / "imagewoof" / "index.csv", root / "ood" / "index.csv"):
        index.touch()
    calibrated: list[Path] = []
    monkeypatch.setattr(quantize_cli, "calibrate_own_rules", lambda p, m, r: calibrated.append(p))
    monkeypatch.setattr(quantize_cli, "compare", _judged_by(passed))
    out = tmp_path / "int8.onnx"
    recipe = Recipe(calibration_method="MinMax", calibration_photos=10, float_nodes=0)
    outcome = quantize_cli.build(SHIPPED_MODEL, out, root, recipe)
    assert len(calibrated) == 1
    assert bool(outcome.problems) != passed and out.exists() == passed
    assert outcome.meta.preprocessing.input_quantization is not None
    assert not list(tmp_path.glob("*.part"))
    int8 = outcome.meta.metrics["int8"]
    assert int8["acceptance"]["passed"] == passed
    assert (int8.get("accepted_on") == SERVED_ANSWERS) == passed
    if passed:
        assert read_onnx_metadata(out).metrics["int8"]["accepted_on"] == SERVED_ANSWERS


def test_cli_without_the_data_exits_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    root = _generated_data_root(tmp_path / "data", per_class=1, constant_train=True)
    out = tmp_path / "x.onnx"
    command = [sys.executable, "-m", "training.release.quantize", str(SHIPPED_MODEL)]
    command += ["--out", str(out), "--data-root", str(root)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("quantize: missing data: ") and "ood/dogs" in last
    assert not out.exists()


def test_variants_are_chosen_by_val_agreement_with_a_margin_for_cost() -> None:
    def measured(
        name: str, agreement: float | None, dropped: str | None = None, ms: float = 4.5
    ) -> Measured:
        return Measured(
            name,
            "MinMax",
            300,
            0,
            val_agreement=agreement,
            dropped=dropped,
            model_ms_batch1_1thread=ms,
        )

    cheap, close, better = measured("a", 97.0), measured("b", 97.1), measured("c", 97.3)
    assert choose([cheap, close]) is cheap  # not more than 0.1 pt better
    assert choose([cheap, close, better]) is better
    assert choose([measured("x", 99.0, "over 600 s"), cheap]) is cheap
    with pytest.raises(RuntimeError):
        choose([measured("x", None, "failed")])
    slow = measured("slow", 98.0, ms=4.5 * 1.11)  # more than 10% slower than the fastest
    assert choose([cheap, slow]) is cheap
    assert choose([cheap, measured("ok", 98.0, ms=4.5 * 1.09)]).variant == "ok"
    with pytest.raises(RuntimeError):  # the float-node round: slower than every base variant
        choose([slow], fastest=4.5)


def test_the_int8_rules_are_calibrated_as_the_pt_records_its_own(tmp_path: Path) -> None:
    args = calibration_args(shipped_metadata(), tmp_path / "int8.onnx", tmp_path, tmp_path)
    open_set, looks_like = args["open_set"], args["looks_like"]

    def value(argv: list[str], flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert float(value(open_set, "--cats-refused")) == pytest.approx(0.99)
    assert float(value(open_set, "--dogs-sure")) == pytest.approx(0.05)
    assert value(open_set, "--max-train") == "2000" and value(open_set, "--held-out-every") == "0"
    assert float(value(looks_like, "--genuine-budget")) == pytest.approx(0.005)
    assert "--write" in open_set and "--write" in looks_like


def test_histogram_ranges_merge_over_chunks(
    monkeypatch: pytest.MonkeyPatch, fp32_onnx: Path, tmp_path: Path
) -> None:
    """Percentile ranges from rows run a few at a time; the graph still runs integer kernels."""
    monkeypatch.setattr("training.release.int8_recipe.HISTOGRAM_CHUNK", 2)
    rows = np.random.default_rng(0).normal(size=(5, 3, 224, 224)).astype(np.float32)
    out, ranges = tmp_path / "percentile.onnx", tmp_path / "ranges.json"
    quantize(fp32_onnx, out, iter(rows), weight_bits=8, method="Percentile", ranges=ranges)
    assert ranges.is_file() and _optimized_ops(out, tmp_path).count("QLinearConv") >= 40


def test_served_artifact_is_the_shipped_model_quantized() -> None:
    """Same classes, preprocessing and prior as the .pt, its own verdict and looks_like
    thresholds set by the .pt's rules: a stale int8 file fails here."""
    int8 = load_backend(INT8_MODEL, threads=1).metadata
    fp32 = shipped_metadata()
    assert int8.version == f"{fp32.version}+int8"

    def core(meta: ModelMetadata) -> ModelMetadata:
        preprocessing = dataclasses.replace(meta.preprocessing, input_quantization=None)
        return dataclasses.replace(
            meta,
            version="",
            metrics={},
            extra={},
            open_set=None,
            looks_like=None,
            preprocessing=preprocessing,
        )

    assert core(int8) == core(fp32)
    assert int8.preprocessing.input_quantization is not None  # it takes uint8 rows
    assert rule_parameters(int8) == rule_parameters(fp32)
    assert int8.metrics["open_set"] != fp32.metrics["open_set"]  # measured on its own outputs
    assert int8.open_set.method and int8.looks_like.method == fp32.looks_like.method
    calibration = int8.extra["quantization"]
    assert calibration["split"] == "imagewoof/train" and calibration["photos"] >= 100
    assert "per breed" in calibration["selection"]
    measured = int8.metrics["int8"]
    assert set(measured["splits"]) == {"unseen", "web", "val", "cats", "dogs"}
    assert INT8_MODEL.stat().st_size < 25 * 2**20


def _optimized_ops(model: Path, tmp_path: Path) -> list[str]:
    """Operator types ONNX Runtime runs for ``model`` after its graph optimisations."""
    import onnx
    import onnxruntime as ort

    options = onnx_session_options(1)
    options.optimized_model_filepath = str(tmp_path / f"optimized-{model.name}")
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def _float_convs(ops: list[str]) -> int:
    return ops.count("Conv") + ops.count("FusedConv")


def test_quantized_graph_runs_integer_kernels(tmp_path: Path) -> None:
    """After ONNX Runtime's optimisations the QDQ pairs are gone into QLinearConv kernels;
    only nodes the recipe gave float weights (7-bit recipe) may still run float Convs."""
    served = load_backend(INT8_MODEL, threads=1).metadata.extra["quantization"]
    ops = _optimized_ops(INT8_MODEL, tmp_path)
    assert ops.count("QLinearConv") >= 40  # EfficientNet-Lite0 has 49 convolutions
    assert _float_convs(ops) <= len(served.get("float_nodes", []))


@pytest.mark.parametrize(
    ("flags", "fast_for_eight_bits"),
    [(frozenset({"avx2"}), False), (frozenset({"avx2", "avx512_vnni"}), True)],
    ids=["avx2", "vnni"],
)
def test_the_fast_kernels_run_only_where_they_are_exact(
    monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], fast_for_eight_bits: bool
) -> None:
    """With VNNI the fast kernels add in 32 bits and are exact for every int8 artifact;
    without it (plain AVX2) only 7-bit weights cannot saturate them."""
    monkeypatch.setattr("model.backends.cpu_flags", lambda: flags)
    served = load_backend(INT8_MODEL, threads=1).metadata
    seven = dataclasses.replace(served, extra={"quantization": {"weight_bits": 7}})
    eight = dataclasses.replace(served, extra={"quantization": {"weight_bits": 8}})
    assert fast_int8_is_exact(seven)
    assert fast_int8_is_exact(eight) == fast_int8_is_exact(served) == fast_for_eight_bits


@pytest.mark.parametrize(
    ("flags", "seven_bit", "sessions"),
    [
        (frozenset({"avx2", "avx512_vnni"}), False, ["fast"]),
        (frozenset({"avx2"}), False, ["exact"]),
        (frozenset({"avx2"}), True, ["exact", "fast"]),
    ],
    ids=["vnni", "avx2", "avx2-7-bit"],
)
def test_a_backend_opens_one_session_unless_its_metadata_asks_for_the_fast_kernels(
    monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], seven_bit: bool, sessions: list[str]
) -> None:
    """A discarded second session would stay in the worker's memory: only 7-bit weights on a
    CPU without int8 dot products are opened twice."""
    opened: list[str] = []
    open_session = model.backends._onnx_session

    def counting(path, options):
        exact = options.get_session_config_entry("session.x64quantprecision") == "1"
        opened.append("exact" if exact else "fast")
        return open_session(path, options)

    monkeypatch.setattr("model.backends.cpu_flags", lambda: flags)
    monkeypatch.setattr("model.backends._onnx_session", counting)
    monkeypatch.setattr("model.backends.fast_int8_is_exact", lambda meta: seven_bit)
    backend = OnnxBackend(INT8_MODEL, threads=1)
    assert opened == sessions
    assert backend.run(np.zeros((1, 3, 224, 224), np.float32)).shape[0] == 1


def test_metadata_reads_without_a_serving_session() -> None:
    for path in (INT8_MODEL, FP32_MODEL):
        assert read_onnx_metadata(path) == load_backend(path, threads=1).metadata


def test_session_options_for_shared_cores() -> None:
    options = onnx_session_options(3)
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.x64quantprecision") == "1"  # safe default
    fast = onnx_session_options(1, exact_int8=False)
    assert fast.get_session_config_entry("session.x64quantprecision") == "0"


def test_distance_to_fp32_counts_both_heads() -> None:
    meta = shipped_metadata()
    rng = np.random.default_rng(0)
    want = rng.normal(size=(4, 1010)).astype(np.float32)
    assert distance(want, want, meta) == pytest.approx(0.0, abs=1e-9)
    breed_only, imagenet_only = want.copy(), want.copy()
    breed_only[:, 0] += 3.0
    imagenet_only[:, 500] += 3.0
    assert distance(want, breed_only, meta) > 0.01
    assert distance(want, imagenet_only, meta) > 0.001


def test_held_out_sample_never_repeats_calibration_photos(tmp_path: Path) -> None:
    root = _generated_data_root(tmp_path / "data", per_class=4, constant_train=False)
    train, meta = root / "imagewoof" / "train", shipped_metadata()
    first = calibration_sample(train, meta, 20, seed=0)
    again = calibration_sample(train, meta, 20, seed=0)
    rest = calibration_sample(train, meta, 20, seed=1, taken=frozenset(p for p, _ in first))
    assert first == again and len(first) == len(rest) == 20
    assert not {p for p, _ in first} & {p for p, _ in rest}


@pytest.fixture(scope="module")
def int8_url() -> Iterator[str]:
    """The service asked for the int8 copy (``MODEL_PRECISION=int8``, no MODEL_URI)."""
    server = start_gunicorn({"MODEL_PRECISION": "int8"})
    yield server.base_url
    server.stop()


def test_served_int8_artifact_under_gunicorn(int8_url: str) -> None:
    base_url = int8_url
    ready = requests.get(f"{base_url}/readyz", timeout=5).json()
    assert ready["model"]["version"].endswith("+int8")
    assert ready["model"]["precision"] == "int8"
    assert ready["model"]["chosen_because"] == "MODEL_PRECISION=int8"
    assert ready["model"]["backend"] == "onnxruntime"
    files = {"image": ("dog.jpg", jpeg_bytes(seed=5))}
    body = requests.post(f"{base_url}/predict", files=files, timeout=30).json()
    assert body["model"] == ready["model"]
    assert body["top_k"][0]["wnid"] in WNIDS


@pytest.mark.data
def test_served_int8_names_real_breeds_under_gunicorn(int8_url: str) -> None:
    base_url = int8_url
    root = imagewoof_dir()
    if root is None:
        pytest.skip("needs ../shared/data (Imagewoof unseen photos)")
    photos = scan_folder(root / "unseen")[::25]  # one per breed
    right = 0
    for photo in photos:
        files = {"image": (photo.path.name, photo.path.read_bytes())}
        body = requests.post(f"{base_url}/predict", files=files, timeout=30).json()
        right += body["breed"] is not None and body["breed"]["wnid"] == photo.wnid
    assert right >= len(photos) - 2, f"{right}/{len(photos)} named right"


def test_recorded_acceptance_is_the_rules_verdict() -> None:
    """What the committed int8 copy says of its acceptance follows from its recorded counts
    by the rule in force, and ``accepted_on`` (what ``auto`` reads) is there only if it passed."""
    measured = read_onnx_metadata(INT8_MODEL).metrics["int8"]
    record = measured["acceptance"]
    rule_in_force = acceptance_record(Comparison([], [], []))["rule"]
    assert record["rule"] == json.loads(json.dumps(rule_in_force))  # as the metadata stores it
    assert [c["criterion"] for c in record["criteria"]] == [c.name for c in ACCEPTANCE.criteria]
    for c in record["criteria"]:
        assert c["int8_right"] - c["fp32_right"] == c["int8_only"] - c["fp32_only"]
        assert c["p_value"] == pytest.approx(sign_test(c["int8_only"], c["fp32_only"]), abs=1e-6)
        assert c["passed"] == (not fails(c["int8_only"], c["fp32_only"], ACCEPTANCE.alpha))
    passed = not record["missing"] and all(c["passed"] for c in record["criteria"])
    assert record["passed"] == passed
    assert (measured.get("accepted_on") == SERVED_ANSWERS) == passed


@pytest.mark.data
def test_recorded_acceptance_holds_when_measured_again(fp32_onnx: Path) -> None:
    """Re-measured here on unseen, web, ood/cats and ood/dogs: the counts the artifact records
    (equal on the machine that made it; other CPUs' kernels may flip a photo or two)."""
    root = imagewoof_dir()
    if root is None or not (root.parent / "ood" / "dogs").is_dir():
        pytest.skip("needs ../shared/data (Imagewoof unseen/web, ood/cats, ood/dogs)")
    splits = ("unseen", "web", "cats", "dogs")
    comparison = compare(fp32_onnx, INT8_MODEL, root.parent, splits, threads=2)
    assert comparison.missing == []
    recorded = read_onnx_metadata(INT8_MODEL).metrics["int8"]["acceptance"]["criteria"]
    for got, want in zip(comparison.criteria, recorded, strict=True):
        assert (got.criterion, got.photos) == (want["criterion"], want["photos"])
        assert abs(got.int8_only - want["int8_only"]) <= 2, got
        assert abs(got.fp32_only - want["fp32_only"]) <= 2, got
