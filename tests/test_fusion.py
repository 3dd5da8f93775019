"""Normalization and fusion: hand-computed cases."""

from __future__ import annotations

import math

import pytest

from rerank_prod import Candidate, ReciprocalRankFusion, WeightedFusion
from rerank_prod.fusion import normalize


def test_minmax_maps_to_unit_interval_and_guards_equal_scores() -> None:
    assert normalize([2.0, 4.0, 3.0], "minmax").tolist() == [0.0, 1.0, 0.5]
    assert normalize([7.0, 7.0], "minmax").tolist() == [0.5, 0.5]


def test_zscore_and_sigmoid() -> None:
    assert normalize([1.0, 3.0], "zscore").tolist() == [-1.0, 1.0]
    assert normalize([5.0, 5.0], "zscore").tolist() == [0.0, 0.0]
    assert normalize([0.0], "sigmoid").tolist() == [0.5]
    assert math.isclose(normalize([2.0], "sigmoid")[0], 1 / (1 + math.exp(-2)))


def test_unknown_normalization_is_rejected() -> None:
    with pytest.raises(ValueError, match="normalization"):
        normalize([1.0, 2.0], "softmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retrieval_normalization"):
        WeightedFusion(retrieval_normalization="rank")  # type: ignore[arg-type]


def test_weighted_fusion_is_a_weighted_mean_of_normalized_signals() -> None:
    candidates = [
        Candidate("a", retrieval_score=10.0),
        Candidate("b", retrieval_score=0.0),
        Candidate("c", retrieval_score=5.0),
    ]
    fused = WeightedFusion(rerank_weight=0.75, retrieval_weight=0.25).fuse("q", candidates, [0.0, 1.0, 0.5])
    # rerank minmax [0, 1, .5], retrieval minmax [1, 0, .5]
    assert fused == pytest.approx([0.25, 0.75, 0.5])


def test_missing_retrieval_scores() -> None:
    fusion = WeightedFusion(rerank_weight=0.5, retrieval_weight=0.5)
    partial = [Candidate("a", retrieval_score=2.0), Candidate("b"), Candidate("c", retrieval_score=4.0)]
    # retrieval minmax over present [0, -, 1]; missing gets the lowest present value (0)
    assert fusion.fuse("q", partial, [1.0, 0.0, 0.0]) == pytest.approx([0.5, 0.0, 0.5])
    # no retrieval score at all: the signal is left out, rerank alone decides
    assert fusion.fuse("q", [Candidate("a"), Candidate("b")], [1.0, 3.0]) == pytest.approx([0.0, 1.0])


def test_bm25_signal_rewards_lexical_match() -> None:
    fusion = WeightedFusion(rerank_weight=0.5, retrieval_weight=0.0, bm25_weight=0.5)
    candidates = [Candidate("cats purr softly"), Candidate("the stock market fell today")]
    fused = fusion.fuse("why do cats purr", candidates, [0.5, 0.5])  # model undecided
    assert fused[0] > fused[1]


def test_rrf_hand_computed() -> None:
    candidates = [Candidate("a"), Candidate("b"), Candidate("c")]
    fused = ReciprocalRankFusion(k=10).fuse("q", candidates, [0.1, 0.9, 0.5])
    # rerank ranks: b=1, c=2, a=3; retriever ranks = input order: a=1, b=2, c=3
    assert fused == pytest.approx([1 / 13 + 1 / 11, 1 / 11 + 1 / 12, 1 / 12 + 1 / 13])


@pytest.mark.parametrize("kwargs", [{"rerank_weight": 0}, {"retrieval_weight": -1}, {"bm25_weight": True}])
def test_bad_weights_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        WeightedFusion(**kwargs)


def test_bad_rrf_k_is_rejected() -> None:
    with pytest.raises(ValueError, match="k must be"):
        ReciprocalRankFusion(k=0)
