"""The runtime's defaults, standard library only: the service's settings import them in the
gunicorn master, before any worker (or numpy) exists.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

# The lab's shipped TorchScript artifact (the source every other artifact is derived from)
# and the static-int8 ONNX one made from it: the one served when MODEL_URI is not set.
SHIPPED_MODEL = Path(__file__).resolve().parent / "efficientnet_lite0_imagewoof.pt"
SERVED_MODEL = SHIPPED_MODEL.with_suffix(".int8.onnx")
# Where artifacts downloaded from S3 are kept, keyed by bucket, key and ETag.
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "breedrecognizer-models"
# Breeds listed per answer unless the caller says otherwise.
DEFAULT_TOP_K = 3
# Anything larger than this many pixels is refused before decoding (PIL checks the header).
DEFAULT_MAX_PIXELS = 40_000_000
