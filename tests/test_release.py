"""Release hygiene: one version, shown by the package and the CLI, and recorded in the CHANGELOG."""

from __future__ import annotations

import subprocess
import sys

import rerank_prod
from tests.conftest import REPO_ROOT


def test_version_is_shown_by_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rerank_prod.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    assert out.stdout.strip() == f"rerank-prod {rerank_prod.__version__}"


def test_pyproject_takes_the_version_from_the_package_and_the_changelog_has_it() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and 'path = "rerank_prod/__init__.py"' in pyproject
    assert f"## {rerank_prod.__version__}" in (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
