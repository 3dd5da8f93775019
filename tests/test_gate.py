"""Selective re-ranking gate decisions."""

from __future__ import annotations

import pytest

from rerank_prod import Candidate, ConfidenceGate


def scored(*scores: float) -> list[Candidate]:
    return [Candidate(f"doc {i}", retrieval_score=s) for i, s in enumerate(scores)]


def test_clear_winner_skips_the_model() -> None:
    decision = ConfidenceGate(min_top_gap=0.3).decide(scored(10.0, 4.0, 3.0, 0.0))
    assert not decision.rerank
    assert decision.top_gap == pytest.approx(0.6)
    assert "top gap 0.600 >= 0.3" in decision.reason


def test_close_top_scores_rerank() -> None:
    decision = ConfidenceGate(min_top_gap=0.3).decide(scored(10.0, 9.5, 3.0, 0.0))
    assert decision.rerank
    assert "<" in decision.reason


def test_all_enabled_signals_must_agree() -> None:
    # big gap but the rest is flat at zero: the spread test alone would also pass; raise its bar
    gate = ConfidenceGate(min_top_gap=0.3, min_top_k_std=0.45, top_k=4)
    decision = gate.decide(scored(10.0, 0.0, 0.0, 0.0))
    assert decision.top_k_std == pytest.approx(0.4330, abs=1e-4)
    assert decision.rerank


def test_order_of_input_does_not_matter() -> None:
    gate = ConfidenceGate(min_top_gap=0.3)
    assert gate.decide(scored(0.0, 3.0, 10.0)) == gate.decide(scored(10.0, 3.0, 0.0))


def test_without_retriever_scores_always_rerank() -> None:
    gate = ConfidenceGate()
    assert gate.decide([Candidate("a"), Candidate("b", retrieval_score=1.0)]).rerank
    assert gate.decide(scored(5.0)).rerank
    assert gate.decide(scored(2.0, 2.0)).rerank  # all equal: no information


@pytest.mark.parametrize(
    "kwargs",
    [{"min_top_gap": None, "min_top_k_std": None}, {"min_top_gap": 1.5}, {"top_k": 1}, {"min_top_k_std": "high"}],
)
def test_bad_configuration(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ConfidenceGate(**kwargs)
