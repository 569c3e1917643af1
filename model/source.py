"""Where the artifact comes from: a local path or ``s3://bucket/key``, with an optional SHA-256.

S3 downloads use boto3 with the standard ``AWS_*`` settings (``AWS_ENDPOINT_URL`` for
S3-compatible stores), bounded timeouts and retries, and are cached on local disk (the
caller's ``cache_dir``, the service's ``MODEL_CACHE_DIR``) keyed by bucket, key and ETag, so
each worker does not download its own copy.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from urllib.parse import urlparse

from model.artifact import atomic_write
from model.backends import ArtifactError
from model.defaults import DEFAULT_CACHE_DIR, FP32_MODEL

log = logging.getLogger(__name__)


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
    """Return a local path to the artifact named by ``uri`` (default: the shipped fp32 ONNX)."""
    uri = uri or str(FP32_MODEL)
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
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR)
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
        # Concurrent workers never see half a file.
        with atomic_write(target) as part:
            client.download_file(bucket, key, str(part))
    except ClientError as exc:
        raise ArtifactError(f"cannot fetch {uri}: {exc.response.get('Error', {})}") from exc
    except BotoCoreError as exc:
        raise ArtifactError(f"cannot fetch {uri}: {exc}") from exc
    log.info("model %s downloaded to %s", uri, target)
    return target
