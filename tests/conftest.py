"""Shared fixtures: real weights and data from ../shared, loaded offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("RERANK_PROD_SHARED", REPO_ROOT.parent / "shared"))
MODELS = SHARED / "models"
DATASETS = SHARED / "datasets"
CROSS_ENCODER_PATH = MODELS / "minilm-l6-scifact-ce"
EMBEDDER_PATH = MODELS / "all-MiniLM-L6-v2"
SCIFACT = DATASETS / "scifact"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: tests need ../shared beside the checkout (or RERANK_PROD_SHARED)")
    return path


@pytest.fixture(scope="session")
def cross_encoder_path() -> str:
    return str(_require(CROSS_ENCODER_PATH))


@pytest.fixture(scope="session")
def embedder_path() -> str:
    return str(_require(EMBEDDER_PATH))


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return _require(SCIFACT)


@pytest.fixture(scope="session")
def cross_encoder(cross_encoder_path: str):
    """The real shared cross-encoder, loaded once for the whole session."""
    from rerank_prod import CrossEncoderScorer

    return CrossEncoderScorer(cross_encoder_path)


# Markers that name what a test needs, so `pytest -m "not needs_models and not needs_redis"` is the
# offline loop. Tests that take a model or Redis fixture are marked here; others mark themselves.
_FIXTURE_MARKERS = {
    "cross_encoder_path": "needs_models",
    "embedder_path": "needs_models",
    "scifact_dir": "needs_models",
    "cross_encoder": "needs_models",
    "redis_server": "needs_redis",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in _FIXTURE_MARKERS:
                item.add_marker(_FIXTURE_MARKERS[fixture])


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A missing redis-server skips its tests locally; in CI (env CI set) it is a failure."""
    from loopback.redis_server import MISSING, REDIS_SERVER

    if REDIS_SERVER is None and item.get_closest_marker("needs_redis") is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{MISSING}; CI must provide it")
        pytest.skip(MISSING)


@pytest.fixture
def redis_server(tmp_path: Path):
    """A real redis-server on 127.0.0.1 on a free port, for this test only."""
    from loopback.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
