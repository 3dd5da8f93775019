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


@pytest.fixture
def redis_server(tmp_path: Path):
    """A real redis-server on 127.0.0.1 on a free port, for this test only."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
