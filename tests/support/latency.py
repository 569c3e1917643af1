"""Percentiles of measured latencies, the way the benchmark pages report them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile by nearest rank: always a value that was measured; nan if none."""
    if not values:
        return math.nan
    return float(np.percentile(values, q, method="inverted_cdf"))
