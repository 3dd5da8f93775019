"""Re-ranker settings from a file: what `rerank-prod tune` writes (and any `rerank-prod eval` config
file), loaded by the core and by both framework adapters through the same two calls.

    reranker = load_reranker("tuned.json", scorer=CrossEncoderScorer(path))   # a full Reranker
    settings = reranker_settings("tuned.json")   # fusion=, gate=, ... for Reranker(...) or an adapter

The file format is the evaluation's (`rerank_prod.evaluation.configs`): JSON `{"rerankers": [...]}`
or TOML `[[reranker]]` tables, each a configuration as plain data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rerank_prod.pipeline import Reranker
    from rerank_prod.scoring.base import Scorer


def _spec(path: str | Path, name: str | None) -> dict[str, Any]:
    from rerank_prod.evaluation.configs import load_config_file, normalize_spec

    specs = [normalize_spec(raw, {}, position + 1) for position, raw in enumerate(load_config_file(path))]
    if name is None:
        return specs[0]
    for spec in specs:
        if spec["name"] == name:
            return spec
    raise ValueError(f"config file {path} has no configuration named {name!r}; it has {[s['name'] for s in specs]}")


def reranker_settings(path: str | Path, *, name: str | None = None) -> dict[str, Any]:
    """The `Reranker` keyword settings (fusion, gate, caches, budgets, fallback_scorer, top_n,
    score_threshold) that the configuration `name` in the file (default: the first) sets, built;
    settings it leaves out are absent, so your own keywords can go beside them.

    Pass them to `Reranker(scorer, **settings)` or to an adapter's constructor
    (`RerankProdCompressor.from_cross_encoder(path, **settings)`). Raises ValueError for a missing
    file, an unknown name or invalid settings; no model is loaded (the scorer is yours).
    """
    from rerank_prod.evaluation.configs import build_settings

    return {key: value for key, value in build_settings(_spec(path, name)).items() if value is not None}


def load_reranker(path: str | Path, *, scorer: Scorer | None = None, name: str | None = None) -> Reranker:
    """The `Reranker` the configuration `name` (default: the first) in the file describes; with
    `scorer`, that scorer replaces the file's (e.g. a model already loaded). Raises ValueError for a
    missing file, an unknown name or invalid settings."""
    from rerank_prod.evaluation.configs import build_reranker

    return build_reranker(_spec(path, name), scorer)
