"""`rerank-prod tune`: the cross-validated selection rule (pure logic) and the command end to end on
a few SciFact train queries with the real cross-encoder, its file loaded by the core."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerank_prod import ConfidenceGate, CrossEncoderScorer, ReciprocalRankFusion, Reranker, WeightedFusion
from rerank_prod.cli import main
from rerank_prod.config_file import load_reranker, reranker_settings
from rerank_prod.evaluation.configs import resolve_specs
from rerank_prod.evaluation.tune import Grid, cross_validate, select, tuning_queries


def test_select_prefers_quality_then_the_cheaper_within_the_tolerance() -> None:
    ndcg = np.array([[0.5, 0.7], [0.6, 0.6], [0.6, 0.58]])
    latency = np.array([[1.0, 1.0], [1.0, 1.0], [0.1, 0.1]])
    every = np.arange(2)
    assert select(ndcg, latency, every, 0.0) in (0, 1)  # both 0.6 on average: ties go to the cheaper (same)
    assert select(ndcg, latency, every, 0.02) == 2  # 0.59 is within 0.02 of 0.6 and ten times cheaper
    assert select(ndcg, latency, np.array([1]), 0.0) == 0  # only query 1 counts: 0.7 wins


def test_cross_validation_scores_each_fold_with_a_pick_made_without_it() -> None:
    # Config 0 is best on even queries, config 1 on odd ones; a fold's pick never sees the fold.
    ndcg = np.array([[1.0, 0.0] * 5, [0.0, 1.0] * 5])
    grid = Grid([(None, None), ({"type": "rrf", "k": 60, "retrieval_weight": 1.0}, None)], ndcg, ndcg * 0, ndcg < 0)
    cv = cross_validate(grid, folds=10, seed=0, max_ndcg_loss=0.0)  # leave-one-out
    assert cv["ndcg@10"] == 0.0  # held out, each query's pick is the other config: the honest estimate
    assert ndcg.mean(axis=1).max() == 0.5  # what picking on all queries would have claimed


def test_validation_carve_is_reproducible() -> None:
    ids = [str(i) for i in range(100)]
    assert tuning_queries(ids, 10, 42, None) == tuning_queries(ids, 10, 42, None) != tuning_queries(ids, 10, 1, None)
    assert tuning_queries(ids, None, 42, 3) == ["0", "1", "2"]


@pytest.mark.slow
def test_tune_writes_a_file_the_core_and_eval_load(
    tmp_path: Path, scifact_dir: Path, cross_encoder_path: str, cross_encoder: CrossEncoderScorer
) -> None:
    out = tmp_path / "tune"
    args = [str(scifact_dir), "--model", cross_encoder_path, "--sample", "6", "--top-k", "5", "--folds", "2"]
    assert main(["tune", *args, "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "tune.json").read_text())
    assert report["settings"]["split"] == "train" and report["settings"]["queries"] == 6
    assert report["settings"]["configurations"] == 45 * 13
    assert report["cross_validated"]["tuned"]["folds"] == 2 and "Cross-validated" in (out / "tune.md").read_text()
    tuned = json.loads((out / "tuned.json").read_text())["rerankers"][0]
    reranker = load_reranker(out / "tuned.json", scorer=cross_encoder)
    assert isinstance(reranker, Reranker) and reranker.scorer is cross_encoder
    settings = reranker_settings(out / "tuned.json")
    assert ("fusion" in settings) == ("fusion" in tuned) and ("gate" in settings) == ("gate" in tuned)
    if "fusion" in tuned:
        kind = WeightedFusion if tuned["fusion"]["type"] == "weighted" else ReciprocalRankFusion
        assert isinstance(settings["fusion"], kind)
    assert "gate" not in settings or isinstance(settings["gate"], ConfidenceGate)
    assert len(reranker.rerank("vitamin d", ["vitamin d and bones", "unrelated text"])) == 2
    (spec,) = resolve_specs([], out / "tuned.json", {"type": "cross-encoder", "model": cross_encoder_path})
    assert spec["name"] == "tuned"  # `rerank-prod eval --config tuned.json` takes it as a configuration
    assert main(["tune", *args, "--out", str(out), "--report-split", "train", "--no-progress"]) == 2  # never


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        reranker_settings(tmp_path / "missing.json")
    path = tmp_path / "two.json"
    path.write_text(
        json.dumps({"rerankers": [{"name": "a", "fusion": "rrf"}, {"name": "b", "gate": {"min_top_gap": 2}}]})
    )
    assert reranker_settings(path)["fusion"].k == 60
    with pytest.raises(ValueError, match="min_top_gap"):
        reranker_settings(path, name="b")
    with pytest.raises(ValueError, match="no configuration named 'c'"):
        reranker_settings(path, name="c")
