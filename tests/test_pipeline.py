"""Pipeline behaviour: validation, selection, gate, timeouts and fallbacks, sync and async."""

from __future__ import annotations

import time

import pytest

from rerank_prod import Candidate, ConfidenceGate, Reranker, SourceKind, WeightedFusion
from tests.support import ConstantTimeScorer, FailingScorer

DOCS = ["blue sky", "a red fox", "red sky at night"]


def test_orders_by_score_and_reports_the_contract() -> None:
    result = Reranker(ConstantTimeScorer()).rerank("red fox", DOCS)
    assert [item.original_rank for item in result] == [1, 2, 0]
    meta = result[0].metadata()
    assert meta == {
        "relevance_score": 2.0,
        "rerank_score": 2.0,
        "retrieval_score": None,
        "original_rank": 1,
        "rerank_source": "model",
        "rerank_chunks": None,  # only a ChunkedScorer fills these
        "rerank_best_chunk": None,
        "rerank_truncated": None,
    }
    assert all(type(v) is float for item in result for v in (item.relevance_score, item.rerank_score))


def test_top_n_threshold_and_empty_input() -> None:
    reranker = Reranker(ConstantTimeScorer(), top_n=10, score_threshold=1.0)
    assert [i.candidate.text for i in reranker.rerank("red fox", DOCS)] == ["a red fox", "red sky at night"]
    assert len(reranker.rerank("red fox", DOCS, top_n=1)) == 1
    empty = reranker.rerank("red fox", [])
    assert len(empty) == 0 and empty.source.kind is SourceKind.SKIPPED


def test_ties_keep_retriever_order() -> None:
    result = Reranker(ConstantTimeScorer()).rerank("zebra", ["one", "two", "three"])
    assert [item.original_rank for item in result] == [0, 1, 2]


def test_inputs_are_not_mutated() -> None:
    candidates = [Candidate("blue sky", id="1", retrieval_score=3.0), Candidate("red fox", id="2", retrieval_score=1.0)]
    snapshot = list(candidates)
    Reranker(ConstantTimeScorer(), fusion=WeightedFusion()).rerank("red fox", candidates)
    assert candidates == snapshot


@pytest.mark.parametrize(
    ("query", "candidates", "top_n", "error", "match"),
    [
        ("", DOCS, None, ValueError, "non-empty"),
        (None, DOCS, None, TypeError, "query must be a str"),
        ("q", "a single string", None, TypeError, "sequence of Candidate"),
        ("q", [1, 2], None, TypeError, "candidate 0 must be"),
        ("q", DOCS, 0, ValueError, "top_n"),
    ],
)
def test_bad_input_raises_clearly(query, candidates, top_n, error, match) -> None:
    with pytest.raises(error, match=match):
        Reranker(ConstantTimeScorer()).rerank(query, candidates, top_n=top_n)


def test_bad_candidate_fields() -> None:
    with pytest.raises(TypeError, match="retrieval_score"):
        Candidate("a", retrieval_score="0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        Candidate("a", retrieval_score=float("nan"))
    with pytest.raises(TypeError, match="text"):
        Candidate(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout_s": 0}, ValueError),
        ({"top_n": -1}, ValueError),
        ({"fusion": "weighted"}, TypeError),
        ({"gate": 0.3}, TypeError),
        ({"score_threshold": float("inf")}, ValueError),
        ({"result_cache": {}}, TypeError),
        ({"fallback_scorer": "bm25"}, TypeError),
    ],
)
def test_bad_configuration_raises(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        Reranker(ConstantTimeScorer(), **kwargs)


def test_scorer_must_implement_the_protocol() -> None:
    with pytest.raises(TypeError, match="scorer"):
        Reranker(object())  # type: ignore[arg-type]


def test_gate_skips_the_model_when_the_retriever_is_confident() -> None:
    scorer = ConstantTimeScorer()
    reranker = Reranker(scorer, gate=ConfidenceGate(min_top_gap=0.3))
    confident = [
        Candidate("blue sky", retrieval_score=9.0),
        Candidate("a red fox", retrieval_score=1.0),
        Candidate("red sky", retrieval_score=0.0),
    ]
    result = reranker.rerank("red fox", confident)
    assert result.source.kind is SourceKind.SKIPPED and not result.gate.rerank
    assert [i.original_rank for i in result] == [0, 1, 2] and scorer.scored_texts == []
    assert result[0].metadata()["rerank_source"].startswith("skipped:gate: top gap 0.889 >= 0.3")
    unsure = [Candidate(c.text, retrieval_score=s) for c, s in zip(confident, [9.0, 8.9, 0.0], strict=True)]
    assert reranker.rerank("red fox", unsure).source.kind is SourceKind.MODEL


@pytest.mark.parametrize("own_budget", [None, 5.0])
def test_an_outer_deadline_bounds_the_call_and_names_its_budget(own_budget: float | None) -> None:
    """`deadline=` (one hop of a larger retrieval) ends the call when it comes before `timeout_s`,
    and the label names the budget that ran out, not the reranker's own."""
    from rerank_prod import Deadline

    reranker = Reranker(ConstantTimeScorer(delay_s=2.0), timeout_s=own_budget)
    started = time.perf_counter()
    result = reranker.rerank("red fox", DOCS, deadline=Deadline.after(0.15))
    assert time.perf_counter() - started < 0.15 + 0.5
    assert str(result.source) == "fallback:retriever order: timeout after 0.15s"


def test_timeout_falls_back_to_retriever_order_within_budget(caplog: pytest.LogCaptureFixture) -> None:
    reranker = Reranker(ConstantTimeScorer(delay_s=2.0), timeout_s=0.2)
    started = time.perf_counter()
    result = reranker.rerank("red fox", DOCS)
    assert time.perf_counter() - started < 1.0
    assert [i.original_rank for i in result] == [0, 1, 2]
    assert str(result.source) == "fallback:retriever order: timeout after 0.2s"
    assert result[0].rerank_score is None and result[0].relevance_score == 1.0
    assert "falling back" in caplog.text
    assert reranker.metrics.snapshot()["fallback_reasons"] == {"retriever order: timeout after 0.2s": 1}


async def test_async_timeout_falls_back() -> None:
    reranker = Reranker(ConstantTimeScorer(delay_s=2.0), timeout_s=0.2)
    started = time.perf_counter()
    result = await reranker.arerank("red fox", DOCS)
    assert time.perf_counter() - started < 1.0
    assert result.source.kind is SourceKind.FALLBACK and "timeout" in result.source.detail


@pytest.mark.parametrize("use_async", [False, True])
async def test_backend_error_uses_the_secondary_scorer(use_async: bool) -> None:
    reranker = Reranker(FailingScorer(name="remote"), fallback_scorer=ConstantTimeScorer(name="local"), top_n=1)
    result = await reranker.arerank("red fox", DOCS) if use_async else reranker.rerank("red fox", DOCS)
    assert result[0].candidate.text == "a red fox" and result[0].rerank_score == 2.0
    assert str(result.source) == "fallback:secondary local: error ConnectionError"
    assert "127.0.0.1" not in str(result.source)  # the message stays in the logs


def test_secondary_failing_too_ends_in_retriever_order() -> None:
    reranker = Reranker(
        FailingScorer(name="remote"),
        fallback_scorer=ConstantTimeScorer(delay_s=1.0, name="slow"),
        timeout_s=0.5,
        fallback_timeout_s=0.1,
    )
    started = time.perf_counter()
    result = reranker.rerank("red fox", DOCS)
    assert time.perf_counter() - started < 0.6  # one budget for the call, the fallback within it
    assert [i.original_rank for i in result] == [0, 1, 2]
    assert str(result.source) == ("fallback:retriever order: error ConnectionError; secondary slow: timeout after 0.5s")


def test_wrong_number_of_scores_is_a_backend_failure() -> None:
    class ShortScorer(ConstantTimeScorer):
        def score(self, query, texts, *, deadline=None):
            return [1.0]

    result = Reranker(ShortScorer()).rerank("red", DOCS)
    assert str(result.source) == "fallback:retriever order: error ScorerError"


def test_metrics_snapshot() -> None:
    reranker = Reranker(ConstantTimeScorer())
    for _ in range(3):
        reranker.rerank("red fox", DOCS)
    snapshot = reranker.metrics.snapshot()
    assert snapshot["calls"] == 3 and snapshot["by_source"]["model"] == 3
    assert 0 <= snapshot["latency_s"]["p50"] <= snapshot["latency_s"]["p99"]


def test_core_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rerank_prod; heavy = [m for m in ('torch', 'sentence_transformers', 'langchain_core', "
        "'llama_index', 'bm25s', 'redis') if m in sys.modules]; print(heavy)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
