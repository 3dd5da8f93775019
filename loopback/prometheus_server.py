"""A real Prometheus server on 127.0.0.1 (Debian's `prometheus` package), scraping given targets
every `interval_s`, with its HTTP query API for reading the scraped numbers back."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from loopback.redis_server import free_port

PROMETHEUS = shutil.which("prometheus")
MISSING = "prometheus is not installed (Debian: apt-get install prometheus)"


class PrometheusServer:
    """`targets`: "127.0.0.1:PORT" endpoints serving `metrics_path`; scraped as job "rerank"."""

    def __init__(
        self, workdir: Path, targets: list[str], *, metrics_path: str = "/metrics", interval_s: float = 0.5
    ) -> None:
        if PROMETHEUS is None:
            raise FileNotFoundError(MISSING)
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        interval = f"{int(interval_s * 1000)}ms"
        target_list = ", ".join(f"'{target}'" for target in targets)
        (workdir / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
            f"scrape_configs:\n  - job_name: rerank\n    metrics_path: {metrics_path}\n"
            f"    static_configs:\n      - targets: [{target_list}]\n",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> PrometheusServer:
        assert PROMETHEUS is not None
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "prometheus.log").open("wb"),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.workdir / "prometheus.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prometheus exited with {self.process.returncode}: {log}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus was not ready within {timeout_s:g} s")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query: the result vector (each {"metric": labels, "value": [ts, "number"]})."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        if answer.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {answer}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(self, promql: str, expected: float, timeout_s: float = 30.0) -> float:
        """Poll `promql` (one series) until it equals `expected`; returns the last value seen."""
        deadline = time.monotonic() + timeout_s
        value = float("nan")
        while time.monotonic() < deadline:
            series = self.query(promql)
            if len(series) == 1:
                value = float(series[0]["value"][1])
                if value == expected:
                    return value
            time.sleep(0.2)
        raise AssertionError(f"{promql} = {value} after {timeout_s:g} s, expected {expected}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
