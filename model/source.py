"""Where the artifact comes from: a local path or ``s3://bucket/key``, with an optional SHA-256.

S3 downloads use boto3 with the standard ``AWS_*`` settings (``AWS_ENDPOINT_URL`` for
S3-compatible stores), bounded timeouts and retries, and are cached on local disk keyed by
bucket, key and ETag, so each worker does not download its own copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from model.backends import ArtifactError

log = logging.getLogger(__name__)

# The lab's shipped TorchScript artifact (the source every other artifact is derived from)
# and the static-int8 ONNX one made from it by ``python -m model.quantize``: the one served
# when MODEL_URI is not set.
SHIPPED_MODEL = Path(__file__).resolve().parent / "efficientnet_lite0_imagewoof.pt"
SERVED_MODEL = SHIPPED_MODEL.with_suffix(".int8.onnx")
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "breedrecognizer-models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_model_uri(
    uri: str | None = None,
    expected_sha256: str | None = None,
    cache_dir: Path | None = None,
    timeout_s: float = 10.0,
) -> Path:
    """Return a local path to the artifact named by ``uri`` (default: the served int8 model)."""
    uri = uri or str(SERVED_MODEL)
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        path = _download_s3(parsed.netloc, parsed.path.lstrip("/"), cache_dir, timeout_s)
    elif parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else uri).expanduser()
        if not path.is_file():
            raise ArtifactError(f"model artifact not found: {path}")
    else:
        raise ArtifactError(f"unsupported MODEL_URI scheme {parsed.scheme!r} (use a path or s3://)")
    if expected_sha256:
        actual = sha256_of(path)
        if actual.lower() != expected_sha256.strip().lower():
            raise ArtifactError(
                f"MODEL_SHA256 mismatch for {uri}: expected {expected_sha256}, got {actual}"
            )
    return path


def _download_s3(bucket: str, key: str, cache_dir: Path | None, timeout_s: float) -> Path:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    if not bucket or not key:
        raise ArtifactError("MODEL_URI must look like s3://bucket/key")
    cache_dir = Path(cache_dir or os.environ.get("MODEL_CACHE_DIR") or DEFAULT_CACHE_DIR)
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    client = boto3.client("s3", config=config)
    uri = f"s3://{bucket}/{key}"
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        etag = head.get("ETag", "").strip('"') or "noetag"
        target = cache_dir / bucket / f"{etag}-{Path(key).name}"
        if target.is_file() and target.stat().st_size == head.get("ContentLength"):
            log.info("model %s found in cache %s", uri, target)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        # Download to a private temp file, then rename: concurrent workers never see half a file.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
        os.close(fd)
        try:
            client.download_file(bucket, key, tmp_name)
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    except ClientError as exc:
        raise ArtifactError(f"cannot fetch {uri}: {exc.response.get('Error', {})}") from exc
    except BotoCoreError as exc:
        raise ArtifactError(f"cannot fetch {uri}: {exc}") from exc
    log.info("model %s downloaded to %s", uri, target)
    return target
