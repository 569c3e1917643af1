"""The ONNX artifact derived from the shipped TorchScript one answers the same way."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.backends import OnnxBackend, TorchScriptBackend, load_backend
from model.defaults import SHIPPED_MODEL
from model.predictor import Predictor
from training.release.onnx_export import convert

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    convert(SHIPPED_MODEL, path)
    return path


def _photo(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A smooth random colour field: structured enough to give varied top classes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_backend_chosen_by_suffix_and_metadata_equal(onnx_path: Path) -> None:
    onnx_backend = load_backend(onnx_path, threads=1)
    torch_backend = load_backend(SHIPPED_MODEL, threads=1)
    assert isinstance(onnx_backend, OnnxBackend)
    assert isinstance(torch_backend, TorchScriptBackend)
    assert onnx_backend.metadata == torch_backend.metadata


def test_same_top1_and_close_logits_on_generated_photos(onnx_path: Path) -> None:
    onnx_pred = Predictor(load_backend(onnx_path, threads=1))
    torch_pred = Predictor(load_backend(SHIPPED_MODEL, threads=1))
    batch = np.stack([onnx_pred.preprocess(_photo(seed)) for seed in range(6)])
    onnx_out = onnx_pred.backend.run(batch)
    torch_out = torch_pred.backend.run(batch)
    assert onnx_out.shape == torch_out.shape == (6, 1010)
    assert np.abs(onnx_out - torch_out).max() < 1e-3
    for a, b in zip(onnx_pred.interpret(onnx_out), torch_pred.interpret(torch_out), strict=True):
        assert a.known == b.known
        assert [s.wnid for s in a.top_k] == [s.wnid for s in b.top_k]
        assert a.top_k[0].confidence == pytest.approx(b.top_k[0].confidence, abs=1e-4)
    # Batch of one (the serving path) gives the same rows as the batch.
    single = onnx_pred.backend.run(batch[:1])
    assert np.abs(single - onnx_out[:1]).max() < 1e-4


def test_pads_are_pinned_but_batch_stays_dynamic(onnx_path: Path) -> None:
    import onnx

    proto = onnx.load(str(onnx_path))
    ops = {node.op_type for node in proto.graph.node}
    assert "Shape" not in ops and "Ceil" not in ops  # no run-time padding arithmetic left
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"


def test_conversion_is_deterministic(onnx_path: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.onnx"
    convert(SHIPPED_MODEL, again)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (onnx_path, again)]
    assert digest[0] == digest[1]


def test_cli_fails_with_one_line_cause(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    result = subprocess.run(
        [sys.executable, "-m", "training.release.onnx_export", str(bad), str(tmp_path / "x.onnx")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("convert_onnx: cannot load TorchScript artifact")
    assert not (tmp_path / "x.onnx").exists()
    assert not list(tmp_path.glob("*.part"))
