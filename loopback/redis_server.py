"""A real `redis-server` on 127.0.0.1, started by the tests on a free port, that a test can kill
and restart on the same port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")
MISSING = "redis-server is not installed (Debian: apt-get install redis-server)"


def require_redis_server() -> str:
    if REDIS_SERVER is None:
        raise FileNotFoundError(MISSING)
    return REDIS_SERVER


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process without persistence; `extra_args` e.g. ("--requirepass", "s3cret").
    With `tls=True` it only speaks TLS, with a self-signed certificate for 127.0.0.1 (`ca_file`)."""

    def __init__(self, workdir: Path, *extra_args: str, tls: bool = False) -> None:
        self.binary = require_redis_server()
        self.workdir = workdir
        self.port = free_port()
        self.ca_file = workdir / "cert.pem"
        self.extra_args = (*self._tls_args(), *extra_args) if tls else extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if "--tls-port" in self.extra_args else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def _tls_args(self) -> tuple[str, ...]:
        key_file = self.workdir / "key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key_file),
                "-out",
                str(self.ca_file),
            ],
            check=True,
            capture_output=True,
        )
        return (
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.ca_file),
            "--tls-key-file",
            str(key_file),
            "--tls-ca-cert-file",
            str(self.ca_file),
            "--tls-auth-clients",
            "no",
        )

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                "0" if "--tls-port" in self.extra_args else str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
