"""Writing artifacts safely: the one atomic file write and the one ONNX metadata writer.

Every tool that writes a model file (download cache, ONNX conversion, quantization, the lab's
metadata rewrite, checkpoints) goes through ``atomic_write``, so a reader never sees half a
file. ``set_onnx_metadata`` works on an ONNX ``ModelProto`` by duck typing
(``proto.metadata_props``), so this runtime package never imports ``onnx``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from model.metadata import METADATA_KEY, ModelMetadata


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; rename it over ``path`` after.

    The temporary file has the same name as ``path``, inside a private side folder of the
    same directory: the rename stays on one filesystem, and formats that record their own
    file name (TorchScript names its archive folder after it) come out as if written in
    place. An existing ``path`` keeps its permission bits. On error the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    side = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    tmp = side / path.name
    try:
        yield tmp
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(side, ignore_errors=True)


def set_onnx_metadata(proto: Any, meta: ModelMetadata) -> None:
    """Store ``meta`` in an ONNX ``ModelProto``'s ``metadata_props``, replacing ours only.

    Entries under other keys are kept, in their order; ours comes last.
    """
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    for key, value in [*kept, (METADATA_KEY, meta.to_json())]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
