"""``benchmarks.ab``: a paired, alternating comparison of two checkouts of the service."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks import ab
from benchmarks.bench import ROOT


def test_rounds_alternate_which_checkout_goes_first() -> None:
    a, b = ab.Checkout("a", Path("a")), ab.Checkout("b", Path("b"))
    assert [c.label for c in ab.round_order((a, b), 3)] == ["a", "b", "b", "a", "a", "b"]


def test_medians_per_checkout_and_level_with_failures_summed() -> None:
    def run(label: str, users: int, rps: float, failures: int = 0) -> dict[str, object]:
        return {
            "checkout": label,
            "users": users,
            "rps": rps,
            "p50_ms": rps / 10,
            "server_cpu_ms_per_req": 1000 / rps,
            "failures": failures,
        }

    runs = [run("a", 1, 10), run("a", 1, 30, 2), run("a", 1, 20), run("b", 1, 40), run("a", 4, 50)]
    assert ab.medians(runs) == [
        ["a", 1, 3, 20.0, 2.0, 50.0, 2],
        ["b", 1, 1, 40.0, 4.0, 25.0, 0],
        ["a", 4, 1, 50.0, 5.0, 20.0, 0],
    ]


def test_one_artifact_for_both_or_each_its_own() -> None:
    assert ab.parse_args(["HEAD", "--own-models"]).model is None
    assert ab.parse_args(["HEAD"]).model.is_file()  # auto's pick here, served by both
    with pytest.raises(SystemExit):
        ab.parse_args(["HEAD", "--own-models", "--model", "model/x.onnx"])


@pytest.mark.parametrize("served", [[], ["--own-models"]], ids=["same-model", "own-models"])
def test_a_short_comparison_of_head_with_the_working_tree(
    tmp_path: Path, served: list[str]
) -> None:
    """For real: HEAD in a temporary worktree against this checkout, both served and loaded."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=False).returncode:
        pytest.skip("not a git checkout")
    out = tmp_path / "ab.md"
    argv = ["HEAD", "--rounds", "1", "--users", "1", "--seconds", "2", "--no-lock", *served]
    assert ab.main([*argv, "--out", str(out)]) == 0
    text = out.read_text()
    assert ("its own" in text) == bool(served)
    lines = text.splitlines()
    rows = [line for line in lines if line.startswith(("| HEAD", "| working tree"))]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[3]) > 0 and cells[-1] == "0"  # requests/s; no failures
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True
    )
    assert "breedrec-ab-" not in listed.stdout  # the temporary worktree is gone
