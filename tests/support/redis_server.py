"""A real ``redis-server`` on a free loopback port, plain or TLS with a self-signed certificate
(as Heroku Redis presents one), for the delivery benchmark and the tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.gunicorn_server import free_port

READY_TIMEOUT_S = 10.0


@dataclass
class RedisServer:
    port: int
    folder: Path
    tls: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        options = {"ssl_cert_reqs": "none"} if self.tls else {}
        return redis.Redis.from_url(self.url, socket_timeout=2, **options)

    def start(self) -> RedisServer:
        """Start (or start again, on the same port) and return once it answers PING."""
        ports = ["--port", str(self.port)]
        if self.tls:
            cert, key = self.folder / "cert.pem", self.folder / "key.pem"
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            ports += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            ports += ["--tls-ca-cert-file", str(cert)]
        self.process = subprocess.Popen(
            [
                "redis-server",
                *ports,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def redis_installed() -> bool:
    return shutil.which("redis-server") is not None


def start_redis(tls: bool = False) -> RedisServer:
    """A fresh server (no persistence) in a temporary folder; needs ``redis_installed()``."""
    folder = Path(tempfile.mkdtemp(prefix="breedrec-redis-"))
    if tls:
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", "/CN=localhost", "-keyout", str(folder / "key.pem")),
                *("-out", str(folder / "cert.pem")),
            ],
            check=True,
            capture_output=True,
        )
    return RedisServer(free_port(), folder, tls).start()
