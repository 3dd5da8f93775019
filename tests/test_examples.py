"""The example chains run offline, as a user would run them, with the fixture models."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _run(example: str, cross_encoder_path: str, embedder_path: str) -> str:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RERANK_PROD_CROSS_ENCODER": cross_encoder_path,
        "RERANK_PROD_EMBEDDER": embedder_path,
        "PYTHONPATH": str(REPO_ROOT),
    }
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / example)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.needs_models
@pytest.mark.slow
def test_langchain_lcel_rag_chain(cross_encoder_path: str, embedder_path: str) -> None:
    out = _run("langchain_rag.py", cross_encoder_path, embedder_path).splitlines()
    reranked = [line for line in out if " model " in line]
    assert len(reranked) == 2 and all("spirin" in line for line in reranked)  # both aspirin passages, re-ranked
    assert out[-1].startswith("answer: Yes")


@pytest.mark.needs_models
@pytest.mark.slow
def test_llamaindex_query_chat_fusion_and_evaluator(cross_encoder_path: str, embedder_path: str) -> None:
    out = _run("llamaindex_pipelines.py", cross_encoder_path, embedder_path)
    assert "query engine: [('node-1'" in out
    assert "chat engine: ['node-1', 'node-0']" in out
    assert "fusion + re-rank: [('node-1', 'model'), ('node-0', 'model')]" in out
    assert "evaluator: {'mrr': 1.0, 'hit_rate': 1.0}" in out
