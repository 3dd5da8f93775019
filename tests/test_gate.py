"""Selective re-ranking gate decisions."""

from __future__ import annotations

import numpy as np
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


def test_naming_no_threshold_gives_the_data_picked_rule() -> None:
    default = ConfidenceGate()
    assert (default.min_top_gap, default.min_top_k_variance, default.min_top_k_std) == (0.3, 0.05, None)
    assert default.scale == "normalized" and default.top_k == 5
    clear = scored(10.0, 5.0, 3.0, 2.0, 1.0, 0.0)  # normalized: gap 0.5, top-5 variance 0.10
    assert not default.decide(clear).rerank
    flat_below_the_winner = scored(100.0, 65.0, 64.0, 63.0, 62.0, 0.0)  # gap 0.35 but top-5 variance 0.021
    decision = default.decide(flat_below_the_winner)
    assert decision.rerank and "top gap 0.350 >= 0.3, top-5 variance 0.0214 < 0.05" in decision.reason
    assert not ConfidenceGate(min_top_gap=0.3).decide(flat_below_the_winner).rerank  # the gap rule alone skips


def test_named_thresholds_are_the_whole_rule() -> None:
    # naming one signal turns the others off: explicitly set thresholds behave as they always did
    assert ConfidenceGate(min_top_gap=0.3) == ConfidenceGate(
        min_top_gap=0.3, min_top_k_std=None, min_top_k_variance=None
    )
    assert ConfidenceGate(min_top_k_std=0.2).min_top_gap is None
    with pytest.raises(ValueError, match="raw-score gate needs its thresholds named"):
        ConfidenceGate(scale="raw")


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


def test_the_articles_rule_on_raw_scores_re_ranks_a_flat_top() -> None:
    # raw cosine scores 0.83..0.79: flat (variance far below 0.01); min-max normalization turns
    # the same scores into a 0.75 gap, which the normalized gap rule would skip
    flat = [Candidate(str(i), retrieval_score=s) for i, s in enumerate([0.83, 0.80, 0.795, 0.792, 0.79])]
    article = ConfidenceGate(min_top_gap=0.3, min_top_k_variance=0.01, scale="raw")
    decision = article.decide(flat)
    assert decision.rerank and decision.top_k_variance == pytest.approx(np.var([0.83, 0.80, 0.795, 0.792, 0.79]))
    assert decision.top_gap == pytest.approx(0.03) and "(raw scores)" in decision.reason
    assert not ConfidenceGate(min_top_gap=0.3).decide(flat).rerank  # the old, normalized reading


def test_raw_rule_skips_a_clear_winner_and_combines_with_and() -> None:
    clear = [Candidate(str(i), retrieval_score=s) for i, s in enumerate([0.95, 0.40, 0.38, 0.35, 0.30])]
    article = ConfidenceGate(min_top_gap=0.3, min_top_k_variance=0.01, scale="raw")
    decision = article.decide(clear)
    assert not decision.rerank and "top gap 0.550 >= 0.3" in decision.reason
    # spread out but no clear winner: the gap rule alone keeps re-ranking
    spread = [Candidate(str(i), retrieval_score=s) for i, s in enumerate([0.95, 0.90, 0.5, 0.3, 0.1])]
    assert article.decide(spread).rerank
    # variance alone
    assert not ConfidenceGate(min_top_gap=None, min_top_k_variance=0.01, scale="raw").decide(spread).rerank


def test_raw_thresholds_are_unbounded_and_scale_is_checked() -> None:
    assert ConfidenceGate(min_top_gap=2.5, scale="raw").min_top_gap == 2.5  # BM25-sized gap
    with pytest.raises(ValueError, match="min_top_gap"):
        ConfidenceGate(min_top_gap=2.5)
    with pytest.raises(ValueError, match="scale"):
        ConfidenceGate(scale="log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_top_k_variance"):
        ConfidenceGate(min_top_k_variance=-0.1)
    with pytest.raises(ValueError, match="at least one"):
        ConfidenceGate(min_top_gap=None)
