"""Paired A/B of the request path: two commits of the service, served in alternation.

    .venv/bin/python -m benchmarks.ab BEFORE [--after REF] [--rounds 3] [--users 1 4]
                                             [--seconds 15] [--model PATH | --own-models]

A shared host's speed drifts by tens of percent within an hour, so a change to the request
path is measured against its parent in the same run, never against an old figure: each round
starts the service as deployed (gunicorn.conf.py, two workers) from one checkout, loads it
with locust at every ``--users`` level, stops it, then does the same for the other checkout;
the order alternates (A B, B A, A B, ...) so that a drift over the run hits both alike. The
table gives per checkout and level the median over the rounds of requests/s, p50 and server
CPU per request (all processes of the service), and the failures summed.

``BEFORE`` and ``--after`` are git revisions, checked out as temporary worktrees; without
``--after`` the working tree itself is measured (uncommitted changes included). Both run with
this interpreter's packages and serve the same ``--model`` file (default: the artifact
``MODEL_PRECISION=auto`` picks here), so a revision whose dependencies differ from the
installed ones cannot be compared this way. With ``--own-models`` each checkout serves the
artifact ``auto`` picks among its own committed ones instead: a change to an artifact and the
code that reads it, measured together. The run takes the CPU lock.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench import ROOT, run_locust
from benchmarks.harness.cpu_lock import cpu_lock
from benchmarks.harness.machine import machine_info
from service.loading import choose_artifact
from service.settings import ModelSettings
from tests.support.gunicorn_server import start_gunicorn
from training.reports.markdown import table

log = logging.getLogger("ab")
WARM_UP_SECONDS = 3


@dataclass(frozen=True)
class Checkout:
    """One side of the comparison: its label and the folder the service starts from."""

    label: str
    tree: Path


def round_order(checkouts: tuple[Checkout, Checkout], rounds: int) -> Iterator[Checkout]:
    """A B, B A, A B, ...: every round measures both, the first of each round alternating."""
    for index in range(rounds):
        yield from checkouts if index % 2 == 0 else checkouts[::-1]


def medians(runs: list[dict[str, Any]]) -> list[list[object]]:
    """Per checkout and users level, in the order first seen: the medians and summed failures."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["checkout"], run["users"]), []).append(run)
    rows = []
    for (label, users), level in groups.items():
        rows.append(
            [
                label,
                users,
                len(level),
                round(statistics.median(r["rps"] for r in level), 1),
                statistics.median(r["p50_ms"] for r in level),
                round(statistics.median(r["server_cpu_ms_per_req"] for r in level), 2),
                sum(r["failures"] for r in level),
            ]
        )
    return rows


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """``revision`` checked out in a temporary git worktree, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="breedrec-ab-")) / "tree"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(folder), revision], check=True)
    try:
        yield folder
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(folder)], check=False)
        shutil.rmtree(folder.parent, ignore_errors=True)


def measure(
    checkouts: tuple[Checkout, Checkout], args: argparse.Namespace, workdir: Path
) -> list[dict[str, Any]]:
    """Every round, both checkouts, every level: locust's figures per run."""
    runs = []
    env = {"WEB_CONCURRENCY": "2"}
    if args.model is not None:
        env["MODEL_URI"] = str(args.model)
    for index, checkout in enumerate(round_order(checkouts, args.rounds)):
        server = start_gunicorn(env, name=f"ab{index}", cwd=checkout.tree)
        try:
            run_locust(server, 2, WARM_UP_SECONDS, workdir)
            for users in args.users:
                row = run_locust(server, users, args.seconds, workdir)
                runs.append({"checkout": checkout.label, **row})
                log.info(
                    "%s, %d users: %s rps, p50 %s ms, %s ms server CPU per request",
                    checkout.label,
                    users,
                    row["rps"],
                    row["p50_ms"],
                    row["server_cpu_ms_per_req"],
                )
        finally:
            server.stop()
    return runs


def render(args: argparse.Namespace, labels: tuple[str, str], rows: list[list[object]]) -> str:
    machine = machine_info()
    served = (
        "each checkout serves the artifact `auto` picks among its own"
        if args.model is None
        else f"`{args.model.name}` served by both"
    )
    return "\n".join(
        [
            f"# Paired A/B: {labels[0]} against {labels[1]}",
            "",
            f"`python -m benchmarks.ab {' '.join(sys.argv[1:])}`; {machine['cpu']}, "
            f"{machine['cores']} cores; {served}; {args.rounds} rounds "
            f"in alternating order, {args.seconds} s per level. Medians over the rounds.",
            "",
            table(
                [
                    "checkout",
                    "users",
                    "rounds",
                    "requests/s",
                    "p50 ms",
                    "server CPU ms / request",
                    "failures",
                ],
                rows,
            ),
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", help="git revision of the A side")
    parser.add_argument("--after", help="git revision of the B side (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=int, default=15)
    served = parser.add_mutually_exclusive_group()
    served.add_argument(
        "--model",
        type=Path,
        default=None,
        help="artifact both serve (default: the one MODEL_PRECISION=auto picks here)",
    )
    served.add_argument(
        "--own-models",
        action="store_true",
        help="each checkout serves the artifact MODEL_PRECISION=auto picks among its own",
    )
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    parser.add_argument("--no-lock", action="store_true", help="do not take the CPU lock")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1 or min(args.users) < 1:
        parser.error("--rounds, --seconds and --users must be at least 1")
    if args.own_models:
        return args
    if args.model is None:
        args.model = Path(choose_artifact(ModelSettings(uri=None, precision="auto"))[0])
    args.model = args.model.resolve()
    if not args.model.is_file():
        parser.error(f"no artifact at {args.model}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    labels = (args.before, args.after or "working tree")
    try:
        with ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="breedrec-ab-")))
            before = stack.enter_context(worktree(args.before))
            after = stack.enter_context(worktree(args.after)) if args.after else ROOT
            with cpu_lock(not args.no_lock):
                runs = measure(
                    (Checkout(labels[0], before), Checkout(labels[1], after)), args, workdir
                )
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"ab: {exc}", file=sys.stderr)
        return 1
    text = render(args, labels, medians(runs))
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
