"""Which recipe makes the int8 copy: variants of its calibration, one chosen by a rule written
down before any of them ran.

Variants (``VARIANTS``, cheapest first): ONNX Runtime's ``quantize_static`` with MinMax,
Percentile and Entropy activation ranges (``int8_recipe.HISTOGRAM_OPTIONS``), each calibrated
on 300 and on 1000 Imagewoof train photos (the same number per breed, a seeded sample), 8-bit
weights. Then the chosen one again with its ``FLOAT_NODES`` most sensitive nodes in float
weights (ranked on 300 other train photos, ``int8_recipe.most_sensitive_nodes``).

Measure: Imagewoof ``val`` only, never ``unseen``, ``web`` or ``ood``. Each variant's output
rows on every val photo and the fp32 copy's are both read under the fp32 copy's rules (prior,
open-set rule, looks_like) as the service answers; ``val_agreement`` is the share of photos
with the same top-1 breed and the same verdict. Recorded beside it, deciding nothing: top-1
and verdict agreement apart, the mean KL divergence of both heads' softmax from fp32, the
calibration and val seconds, and the batch-1 one-thread model time.

Model times are measured paired (``paired_model_ms``): the candidates' files are timed in
turns, alternating the order over ``TIMING_ROUNDS`` rounds, and each keeps its median, so the
host's drift over the minutes the variants take to build falls on all of them alike. (Timed
one at a time, right after each was built, a run once found an Entropy variant that agrees
with fp32 on 0.4% of val 11% faster than every other variant, which left only the broken
Entropy variants eligible.)

Rule (``choose``): the int8 copy exists to be fast, so only variants whose batch-1 model time
is within ``SPEED_SLACK`` (10%) of the fastest variant's are eligible. Among them, walk the
variants in order; one replaces the best so far only when its ``val_agreement`` is higher by
more than ``MARGIN`` (0.1 pt, 4 of the 3767 val photos), so a costlier recipe has to earn its
place. The float-node variant of the one chosen is judged against it the same way, speed
included. A variant whose run fails (memory included) or takes over ``TIME_LIMIT_S`` for
calibration and val pass together is dropped, and the reason recorded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.backends import OnnxBackend
from training.lab.answers import read_answers
from training.lab.data import scan_folder
from training.lab.evaluate import model_outputs
from training.release.int8_acceptance import model_ms
from training.release.int8_recipe import Recipe, distance, make_int8, preprocessed

log = logging.getLogger(__name__)

MARGIN = 0.1  # percentage points of val photos
SPEED_SLACK = 0.10  # eligible: model time at most 10% over the fastest variant's
TIME_LIMIT_S = 600  # one variant's calibration + val pass
FLOAT_NODES = 4
TIMING_ROUNDS = 6  # paired timing: rounds over all candidates, order alternating
TIMING_REPEATS = 50  # batch-1 runs per candidate per round


@dataclass(frozen=True)
class Variant:
    name: str
    method: str  # ONNX Runtime CalibrationMethod name
    photos: int  # calibration photos from Imagewoof train
    float_nodes: int = 0

    def recipe(self) -> Recipe:
        return Recipe(
            weight_bits=8,
            calibration_method=self.method,
            calibration_photos=self.photos,
            float_nodes=self.float_nodes,
        )


VARIANTS: tuple[Variant, ...] = (
    Variant("minmax-300", "MinMax", 300),
    Variant("minmax-1000", "MinMax", 1000),
    Variant("percentile-300", "Percentile", 300),
    Variant("percentile-1000", "Percentile", 1000),
    Variant("entropy-300", "Entropy", 300),
    Variant("entropy-1000", "Entropy", 1000),
)

SELECTION_RULE = (
    f"among variants whose batch-1 one-thread model time (timed paired, alternating rounds) "
    f"is at most {SPEED_SLACK:.0%} over the fastest variant's, highest val_agreement (same "
    f"top-1 and same verdict as fp32 on Imagewoof val, both read under fp32's rules), walking "
    f"the variants in the order listed: a later one replaces the best so far only if higher "
    f"by more than {MARGIN} pt; then the chosen one with its {FLOAT_NODES} most sensitive "
    f"nodes in float weights, by the same rule; a variant failing or over {TIME_LIMIT_S} s "
    f"(calibration + val pass) is dropped"
)


@dataclass
class Measured:
    """One variant measured on val against fp32 (percentages), or why it was dropped."""

    variant: str
    method: str
    photos: int
    float_nodes: int
    val_agreement: float | None = None
    top1_agreement: float | None = None
    verdict_agreement: float | None = None
    kl_distance: float | None = None
    calibration_s: float | None = None
    val_s: float | None = None
    model_ms_batch1_1thread: float | None = None
    dropped: str | None = None


def fastest_ms(measured: list[Measured]) -> float:
    """The batch-1 model time of the fastest variant not dropped."""
    times = [m.model_ms_batch1_1thread for m in measured if m.dropped is None]
    return min((t for t in times if t is not None), default=float("inf"))


def choose(
    measured: list[Measured], fastest: float | None = None, margin: float = MARGIN
) -> Measured:
    """The variant the rule keeps (module docstring) among those not dropped, in order;
    ``fastest``: the model time eligibility is measured from (default: the fastest here)."""
    limit = (fastest_ms(measured) if fastest is None else fastest) * (1 + SPEED_SLACK)
    best: Measured | None = None
    for m in measured:
        if m.dropped is not None or m.val_agreement is None:
            continue
        if m.model_ms_batch1_1thread is None or m.model_ms_batch1_1thread > limit:
            continue
        if best is None or m.val_agreement > best.val_agreement + margin:
            best = m
    if best is None:
        raise RuntimeError("no int8 variant is eligible: every one was dropped or too slow")
    return best


def val_photos(data_root: Path, classes: list[str]) -> list[Path]:
    wanted = set(classes)
    return [s.path for s in scan_folder(data_root / "imagewoof" / "val") if s.wnid in wanted]


def agreement(fp32_out: np.ndarray, int8_out: np.ndarray, meta) -> dict[str, float]:
    """``val_agreement`` and its parts: both output sets read under ``meta`` (fp32's rules)."""
    want, got = read_answers(fp32_out, meta), read_answers(int8_out, meta)
    same_top1, same_verdict = want.top1 == got.top1, want.verdict == got.verdict

    def pct(values: np.ndarray) -> float:
        return round(float(values.mean()) * 100, 2)

    return {
        "val_agreement": pct(same_top1 & same_verdict),
        "top1_agreement": pct(same_top1),
        "verdict_agreement": pct(same_verdict),
        "kl_distance": round(distance(fp32_out, int8_out, meta), 6),
    }


def _run_variant(variant: Variant, fp32: str, data_root: str, seed: int, work: str) -> None:
    """In a child process: make the variant, measure it on val, write ``work/measured.json``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
    folder, root = Path(work), Path(data_root)
    fp32_path, int8_path = Path(fp32), folder / "int8.onnx"
    started = time.perf_counter()
    calibration, _ = make_int8(
        fp32_path, int8_path, root / "imagewoof" / "train", variant.recipe(), seed, folder
    )
    calibrated = time.perf_counter()
    fp32_backend = OnnxBackend(fp32_path, threads=None)
    meta = fp32_backend.metadata
    paths = val_photos(root, [c.wnid for c in meta.classes])
    want = model_outputs(fp32_path, paths, fp32_backend)  # cached before any variant ran
    int8_backend = OnnxBackend(int8_path, threads=None)  # not cached: val_s is a real pass
    int8_meta = int8_backend.metadata
    got = np.concatenate([int8_backend.run(b) for b in preprocessed(paths, int8_meta)])
    measured = agreement(want, got, meta)
    val_s = time.perf_counter() - calibrated
    measured["calibration_s"] = round(calibrated - started, 1)
    measured["val_s"] = round(val_s, 1)
    (folder / "calibration.json").write_text(json.dumps(calibration))
    (folder / "measured.json").write_text(json.dumps(measured))


def paired_model_ms(models: list[Path], photo: Path, rounds: int = TIMING_ROUNDS) -> list[float]:
    """Batch-1 one-thread model time of each file (ms): the median over ``rounds`` rounds
    that time every file in turn, the order reversed every other round. Each runs ``photo``
    as its own preprocessing gives it."""
    backends = [OnnxBackend(path, threads=1) for path in models]
    rows = [next(preprocessed([photo], backend.metadata)) for backend in backends]
    times: list[list[float]] = [[] for _ in models]
    order = list(range(len(models)))
    for turn in range(rounds):
        for index in order if turn % 2 == 0 else order[::-1]:
            times[index].append(model_ms(backends[index], rows[index], TIMING_REPEATS))
    return [round(statistics.median(t), 2) for t in times]


def _timed(measured: list[Measured], work: Path, photo: Path) -> list[Measured]:
    """``measured`` with the model times of those not dropped, timed paired."""
    kept = [m for m in measured if m.dropped is None]
    times = paired_model_ms([work / m.variant / "int8.onnx" for m in kept], photo)
    timed = dict(zip((m.variant for m in kept), times, strict=True))
    return [
        dataclasses.replace(m, model_ms_batch1_1thread=timed[m.variant])
        if m.variant in timed
        else m
        for m in measured
    ]


def measure(
    variant: Variant, fp32: Path, data_root: Path, seed: int, work: Path, limit_s: float
) -> Measured:
    """One variant made and measured in a child process (a time limit, its own memory)."""
    work.mkdir(parents=True, exist_ok=True)
    result = Measured(variant.name, variant.method, variant.photos, variant.float_nodes)
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=_run_variant, args=(variant, str(fp32), str(data_root), seed, str(work))
    )
    started = time.perf_counter()
    child.start()
    child.join(limit_s)
    if child.is_alive():
        child.terminate()
        child.join()
        result.dropped = f"over {limit_s:.0f} s (calibration + val pass)"
    elif child.exitcode != 0:
        why = "killed (out of memory?)" if child.exitcode and child.exitcode < 0 else "failed"
        result.dropped = f"{why}: exit code {child.exitcode}"
    else:
        for key, value in json.loads((work / "measured.json").read_text()).items():
            setattr(result, key, value)
    log.info("%s in %.0fs: %s", variant.name, time.perf_counter() - started, result)
    return result


@dataclass
class Chosen:
    """The variants measured, the one chosen, its file and how it was made."""

    measured: list[Measured]
    chosen: Measured
    path: Path
    calibration: dict[str, object]

    def record(self) -> dict[str, object]:
        return {
            "rule": SELECTION_RULE,
            "chosen": self.chosen.variant,
            "variants": [dataclasses.asdict(m) for m in self.measured],
        }


def choose_variant(
    fp32: Path,
    data_root: Path,
    seed: int,
    work: Path,
    variants: tuple[Variant, ...] = VARIANTS,
    limit_s: float = TIME_LIMIT_S,
) -> Chosen:
    """Every variant measured on val, then the rule's choice and its float-node variant."""
    backend = OnnxBackend(fp32, threads=None)  # fp32's val outputs first: no variant pays them
    photos = val_photos(data_root, [c.wnid for c in backend.metadata.classes])
    model_outputs(fp32, photos, backend)
    del backend
    measured = [measure(v, fp32, data_root, seed, work / v.name, limit_s) for v in variants]
    photo = photos[0]  # what is timed: one photo, as each variant's preprocessing gives it
    measured = _timed(measured, work, photo)
    best = choose(measured)
    by_name = {v.name: v for v in variants}
    base = by_name[best.variant]
    floated = dataclasses.replace(
        base, name=f"{base.name}+float{FLOAT_NODES}", float_nodes=FLOAT_NODES
    )
    with_floated = measure(floated, fp32, data_root, seed, work / floated.name, limit_s)
    best, with_floated = _timed([best, with_floated], work, photo)  # paired with its base
    measured.append(with_floated)
    chosen = choose([best, with_floated])
    folder = work / chosen.variant
    calibration = json.loads((folder / "calibration.json").read_text())
    return Chosen(measured, chosen, folder / "int8.onnx", calibration)
