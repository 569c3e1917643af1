"""The runtime's defaults, standard library only: the service's settings import them in the
gunicorn master, before any worker (or numpy) exists.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

# The lab's shipped TorchScript artifact (the source every other artifact is derived from)
# and its two ONNX copies; without MODEL_URI the service serves one of these two, chosen for
# the CPU (model/precision.py).
SHIPPED_MODEL = Path(__file__).resolve().parent / "efficientnet_lite0_imagewoof.pt"
FP32_MODEL = SHIPPED_MODEL.with_suffix(".onnx")
INT8_MODEL = SHIPPED_MODEL.with_suffix(".int8.onnx")
# Where artifacts downloaded from S3 are kept, keyed by bucket, key and ETag.
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "breedrecognizer-models"
# Breeds listed per answer unless the caller says otherwise.
DEFAULT_TOP_K = 3
# Anything larger than this many pixels is refused before decoding (PIL checks the header).
DEFAULT_MAX_PIXELS = 40_000_000
# Bytes of memory one photo's decoding may take (model/decode_budget.py): a 12-megapixel phone
# photo fits in every format phones save (JPEG, HEIC, AVIF) and a 2,500 x 5,500 screenshot in
# PNG; with one such decode at a time per container, two workers stay inside 512 MB.
DEFAULT_DECODE_BUDGET_BYTES = 128 * 2**20
