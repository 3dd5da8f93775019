"""The fault-matrix benchmark's smoke mode runs end to end: no exception escapes, no key leaks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.needs_redis
def test_fault_matrix_smoke() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.fault_matrix", "--smoke"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "0 exceptions escaped" in summary and "key leaked in 0 cases" in summary, summary
