"""The breed logits the answer is read from: the model's, shifted by the artifact's prior.

One function shared by the service and the lab's evaluation, so a prior stored in the
artifact is measured exactly as it is served.
"""

from __future__ import annotations

import numpy as np

from model.metadata import ModelMetadata


def answer_logits(outputs: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Breed logits of each output row plus the prior's log adjustment (if the artifact has one)."""
    start, end = meta.outputs.breed
    logits = outputs[:, start:end]
    if meta.prior.log_adjustment:
        logits = logits + np.asarray(meta.prior.log_adjustment, dtype=logits.dtype)
    return logits
