"""Every Python block in the README runs as written, each on its own, offline: the fixture models come in
through the environment variables the blocks read (`RERANK_PROD_CROSS_ENCODER`, `RERANK_PROD_EMBEDDER`,
defaulting to the hub names), a real redis-server through `REDIS_URL`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
BLOCKS = BLOCK.findall((REPO_ROOT / "README.md").read_text(encoding="utf-8"))


def _label(index: int) -> str:
    first = next(line for line in BLOCKS[index].splitlines() if line.strip())
    return f"{index}:{first[:40]}"


def test_the_readme_has_python_blocks_and_no_transcripts() -> None:
    assert len(BLOCKS) >= 10
    assert not [block for block in BLOCKS if block.lstrip().startswith(">>>")]


@pytest.mark.needs_models
@pytest.mark.needs_redis
@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=_label)
def test_block_runs_as_written(
    index: int, tmp_path: Path, cross_encoder_path: str, embedder_path: str, redis_server
) -> None:
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RERANK_PROD_CROSS_ENCODER": cross_encoder_path,
        "RERANK_PROD_EMBEDDER": embedder_path,
        "REDIS_URL": redis_server.url,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for key in ("CO_API_KEY", "COHERE_API_KEY", "OPENAI_API_KEY"):
        env.setdefault(key, "not-a-real-key")  # building a remote scorer sends nothing
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n--- stderr ---\n{done.stderr[-3000:]}"
