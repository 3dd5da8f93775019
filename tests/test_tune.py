"""`rerank-prod tune`: the cross-validated selection rule (pure logic) and the command end to end on
a few SciFact train queries with the real cross-encoder, its file loaded by the core."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerank_prod import Candidate, ConfidenceGate, CrossEncoderScorer, ReciprocalRankFusion, Reranker, WeightedFusion
from rerank_prod.cli import main
from rerank_prod.config_file import load_reranker, reranker_settings
from rerank_prod.evaluation.configs import resolve_specs
from rerank_prod.evaluation.tune import (
    Grid,
    TuneOptions,
    cross_validate,
    gate_grid,
    gate_sweep,
    raw_gate_grid,
    select,
    tuned_spec,
    tuning_queries,
)


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


def test_the_gate_grid_covers_gap_and_variance_on_both_scales() -> None:
    grid = [gate for gate in gate_grid() if gate is not None]
    for scale in ("normalized", "raw"):
        mine = [g for g in grid if g["scale"] == scale]
        assert any(g["min_top_gap"] is not None and g["min_top_k_variance"] is None for g in mine)
        assert any(g["min_top_gap"] is None and g["min_top_k_variance"] is not None for g in mine)
        assert any(g["min_top_gap"] is not None and g["min_top_k_variance"] is not None for g in mine)
    assert {"min_top_gap": 0.3, "min_top_k_variance": 0.01, "min_top_k_std": None, "top_k": 5, "scale": "raw"} in grid
    # what tune writes builds the very gate it evaluated: unnamed signals are off, not defaulted
    for gate in grid:
        spec = tuned_spec(TuneOptions(Path("."), {}, Path(".")), None, gate)
        assert ConfidenceGate(**spec["gate"]) == ConfidenceGate(**gate)


def test_raw_gates_sit_at_the_quartiles_of_the_data() -> None:
    candidates = [
        [Candidate(str(i), retrieval_score=s) for i, s in enumerate((top, 0.0, 0.0))] for top in (1, 2, 3, 4, 5)
    ]
    grid = raw_gate_grid(candidates)  # raw top gaps 1..5: quartiles 2, 3, 4
    assert [g["min_top_gap"] for g in grid[:3]] == [2.0, 3.0, 4.0] and all(g["scale"] == "raw" for g in grid)
    assert grid[-1]["min_top_gap"] == 3.0 and grid[-1]["min_top_k_variance"] == grid[4]["min_top_k_variance"]
    assert raw_gate_grid([[Candidate("a"), Candidate("b")]]) == []  # no retriever scores: nothing to size


def test_gate_sweep_reports_skip_rate_against_ndcg_behind_one_fusion() -> None:
    fusion = {"type": "rrf", "k": 60, "retrieval_weight": 1.0}
    skip_half = {
        "min_top_gap": 0.5,
        "min_top_k_variance": None,
        "min_top_k_std": None,
        "top_k": 5,
        "scale": "normalized",
    }
    pairs = [(fusion, None), (fusion, skip_half), (None, None), (None, skip_half)]
    ndcg = np.array([[0.8, 0.6, 0.8, 0.6], [0.8, 0.7, 0.8, 0.7], [0.1] * 4, [0.1] * 4])
    latency = np.array([[1.0] * 4, [1.0, 0.0, 1.0, 0.0], [1.0] * 4, [1.0, 0.0, 1.0, 0.0]])
    skip = latency == 0.0
    sweep = gate_sweep(Grid(pairs, ndcg, latency, skip), fusion, folds=2, seed=0, max_ndcg_loss=0.0)
    assert [row["gate"] for row in sweep["rows"]] == ["no gate", "gap>=0.5"]
    assert sweep["rows"][1]["skip_rate"] == 0.5 and sweep["rows"][1]["ndcg_loss"] == pytest.approx(-0.05)
    assert sweep["chosen"] == "gap>=0.5" and sweep["ungated"]["ndcg@10"] == pytest.approx(0.7)
    picks = sweep["cross_validated"]["picks"]  # a fold of unskipped queries ties: the grid's first (no gate) wins
    assert len(picks) == 2 and set(picks) <= {"gap>=0.5", "no gate"}


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
    assert report["settings"]["configurations"] == 45 * (len(gate_grid()) + 7)  # + raw gates at the quartiles
    sweeps = report["gate_sweeps"]
    assert 1 <= len(sweeps) <= 2 and sweeps[-1]["fusion"] == "weighted 0.5/0.5 minmax/minmax"
    gates = [row["gate"] for row in sweeps[-1]["rows"]]
    assert len(gates) == len(gate_grid()) + 7 and "gap>=0.3 & top-5 var>=0.01 (raw)" in gates
    assert sweeps[-1]["rows"][0]["gate"] == "no gate" and sweeps[-1]["rows"][0]["skip_rate"] == 0.0
    assert len(sweeps[-1]["cross_validated"]["picks"]) == 2 and "Gate sweep behind" in (out / "tune.md").read_text()
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
