"""The int8 copy's own verdict thresholds and looks_like margin: the fp32 artifact's two
calibrations run again on the int8 copy's outputs, by the same rules, on the same photos.

The fp32 artifact got its open-set rule (the three verdicts) from ``python -m
training.release.open_set --write --max-train N`` and its looks_like margin from ``python -m
training.release.looks_like --write``. ``calibrate_own_rules`` runs those two commands' own
code on the int8 file, with the parameters the fp32 artifact's metadata records (the shares
of its threshold rules, the number of train photos, which photos count as genuine), and
refuses unless the rule texts it writes are the fp32 artifact's word for word. Those commands
print ``unseen`` and ``web`` figures but never use them. The deployment prior is not
calibrated again: it states how often each breed comes (set on unseen + web, which no
calibration here may read), so the int8 copy keeps fp32's.
"""

from __future__ import annotations

import itertools
import logging
import re
import tempfile
from pathlib import Path

from model.backends import ArtifactError, read_onnx_metadata
from model.metadata import ModelMetadata
from training.release import looks_like, open_set

log = logging.getLogger(__name__)


def _share(pattern: str, text: str, what: str) -> str:
    """A percentage the rule text states, as the command line takes it (a fraction)."""
    found = re.search(pattern, text)
    if found is None:
        raise ArtifactError(f"the fp32 artifact's {what} rule does not say {pattern!r}: {text!r}")
    return repr(float(found.group(1)) / 100)


def _held_out_every(text: str) -> str:
    found = re.search(r"held out of training \(every (\d+)th\)", text)
    return found.group(1) if found else "0"


def calibration_args(fp32: ModelMetadata, int8: Path, data_root: Path, out_dir: Path) -> dict:
    """Both commands' arguments, as the fp32 artifact's metadata records its calibrations."""
    try:
        open_entry = fp32.metrics["open_set"]
        looks_entry = fp32.metrics["looks_like"]
        open_text, looks_text = open_entry["threshold_rule"], looks_entry["threshold_rule"]
        train = int(open_entry["photos"]["train"])
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"the fp32 artifact records no calibration to repeat ({exc})") from None
    common = ["--artifact", str(int8), "--write", "--data-dir", str(data_root)]
    open_args = [
        *common,
        "--cats-refused",
        _share(r"refusing (\d+(?:\.\d+)?)% of ood/cats", open_text, "open-set"),
        "--dogs-sure",
        _share(r"at most (\d+(?:\.\d+)?)% of ood/dogs", open_text, "open-set"),
        "--held-out-every",
        _held_out_every(open_text),
        "--max-train",  # the train photos it reports on (a subset of this size)
        str(train),
        "--out-dir",
        str(out_dir),
    ]
    looks_args = [
        *common,
        "--genuine-budget",
        _share(r"at most (\d+(?:\.\d+)?)% of genuine photos", looks_text, "looks_like"),
        "--held-out-every",
        _held_out_every(looks_text),
    ]
    return {"open_set": open_args, "looks_like": looks_args}


def rule_parameters(meta: ModelMetadata) -> dict[str, object]:
    """What an artifact's two calibration rules were run with, read from its metadata (the
    rule texts' wording may change between versions of the lab; these may not)."""
    fp32_args = calibration_args(meta, Path("-"), Path("-"), Path("-"))

    def flags(argv: list[str]) -> dict[str, str]:
        pairs = itertools.pairwise(argv)
        return {
            k: v
            for k, v in pairs
            if k.startswith("--") and not v.startswith("--") and k not in IGNORED
        }

    return {key: flags(argv) for key, argv in fp32_args.items()}


IGNORED = ("--artifact", "--data-dir", "--out-dir")


def calibrate_own_rules(int8: Path, fp32: ModelMetadata, data_root: Path) -> ModelMetadata:
    """Write into the ONNX file ``int8`` (in place, weights untouched) its own open-set rule
    and looks_like margin, calibrated as ``fp32``'s were; returns its new metadata."""
    with tempfile.TemporaryDirectory(prefix="breedrec-int8-rules-") as tmp:
        args = calibration_args(fp32, int8, data_root, Path(tmp))
        log.info("open-set calibration of the int8 copy: %s", " ".join(args["open_set"]))
        open_set.run(open_set.parse_args(args["open_set"]))
        log.info("looks_like calibration of the int8 copy: %s", " ".join(args["looks_like"]))
        looks_like.run(looks_like.parse_args(args["looks_like"]))
    meta = read_onnx_metadata(int8)
    ours, theirs = rule_parameters(meta), rule_parameters(fp32)
    if ours != theirs:
        raise ArtifactError(f"the int8 copy's rules {ours} differ from fp32's {theirs}")
    if meta.prior != fp32.prior:
        raise ArtifactError("the int8 copy's prior differs from fp32's")
    return meta


def rules_summary(meta: ModelMetadata) -> dict[str, object]:
    """The thresholds a copy's answers are read under (for reports)."""
    rule = meta.open_set
    return {
        "open_set": {
            "method": rule.method if rule else None,
            "threshold": rule.threshold if rule else None,
            "sure_method": (rule.sure_method or rule.method) if rule else None,
            "sure_threshold": rule.sure_threshold if rule else None,
        },
        "looks_like_unsure_margin": meta.looks_like.unsure_margin if meta.looks_like else None,
    }
