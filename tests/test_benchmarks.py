"""Benchmarks stay runnable: each one's --help in a fresh process (imports, argument parsing), and a
tiny real run of the cache benchmark, so a refactor cannot silently break them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted(path.stem for path in (REPO_ROOT / "benchmarks").glob("*.py") if not path.stem.startswith("_"))


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_benchmark_help(benchmark: str) -> None:
    done = _run("-m", f"benchmarks.{benchmark}", "--help", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.needs_models
@pytest.mark.needs_redis
def test_cache_benchmark_smoke_run() -> None:
    done = _run("-m", "benchmarks.cache_bench", "--queries", "1", "--index-sizes", "100", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| in-memory | exact hit | 0 |" in done.stdout
    assert "| redis | semantic hit | 0 |" in done.stdout


def test_observability_benchmark_smoke_run() -> None:
    done = _run("-m", "benchmarks.observability_bench", "--smoke", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| metrics+tracing | 300 |" in done.stdout
    assert "metrics + tracing, p50 added over off:" in done.stdout


@pytest.mark.needs_models
@pytest.mark.needs_services
@pytest.mark.slow
def test_batch_benchmark_smoke_run() -> None:
    done = _run("-m", "benchmarks.batch_bench", "--smoke", timeout=400)
    assert done.returncode == 0, done.stderr
    assert "| Ray Data, 1 actor x 1 CPU |" in done.stdout
    assert "| single process, " in done.stdout


@pytest.mark.needs_models
def test_quickstart_budget_smoke_run() -> None:
    """Runs the README quickstarts as written; the 95% target itself is the benchmark's, not a test's."""
    done = _run("-m", "benchmarks.quickstart_budget", "--calls", "2", "--target", "0", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| LangChain | 0.5 s |" in done.stdout and "| LlamaIndex | 0.5 s |" in done.stdout
