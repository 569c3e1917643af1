"""The command line shared by the calibrations that write a rule into an artifact."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from model.backends import ArtifactError


def run_calibration(
    what: str,
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None,
) -> int:
    """Parse, run, and turn a failure into one line on stderr and exit status 1."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except (ArtifactError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"{what} calibration failed: {exc}", file=sys.stderr)
        return 1
    return 0
