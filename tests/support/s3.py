"""A real S3-speaking server for the tests: moto's, on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.server import ThreadedMotoServer

from tests.support.gunicorn_server import free_port

# What the service and boto3 read from the environment to reach it.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3(*buckets: str) -> Iterator[str]:
    """moto's server with these buckets made; yields its endpoint URL."""
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for bucket in buckets:
            client(endpoint).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        moto.stop()


def client(endpoint: str) -> Any:
    """A boto3 S3 client of the test credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )
