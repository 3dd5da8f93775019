"""BM25Scorer: a lexical scorer over the candidate set, as primary scorer and as the fallback."""

from __future__ import annotations

import pytest

from rerank_prod import BM25Scorer, Deadline, Reranker, ScoringTimeout, SourceKind, WeightedFusion
from rerank_prod.fusion import bm25_scores
from tests.support import ConstantTimeScorer, FailingScorer

PASSAGES = [
    "The stock market fell sharply today.",
    "Aspirin lowers the risk of a second heart attack.",
    "Cats purr when they are content.",
    "Low-dose aspirin and heart attack prevention in adults.",
]


def test_scores_are_the_fusion_bm25_signal() -> None:
    scores = BM25Scorer().score("aspirin heart attack", PASSAGES)
    assert scores == pytest.approx(bm25_scores("aspirin heart attack", PASSAGES).tolist())
    assert all(type(s) is float for s in scores)
    assert scores[0] == 0.0 and scores[2] == 0.0 and min(scores[1], scores[3]) > 0


def test_stop_word_query_or_candidates_score_zero_instead_of_crashing() -> None:
    assert BM25Scorer().score("the of and", PASSAGES) == [0.0] * 4
    assert BM25Scorer().score("aspirin", ["the", "", "of it"]) == [0.0] * 3
    # the same inputs through fusion (it shares the code) no longer raise from inside a rerank call
    result = Reranker(ConstantTimeScorer(), fusion=WeightedFusion(bm25_weight=0.5)).rerank("the of", ["the", "of"])
    assert len(result) == 2


def test_spent_budget_is_not_started() -> None:
    with pytest.raises(ScoringTimeout):
        BM25Scorer().score("aspirin", PASSAGES, deadline=Deadline.after(0.0))
    assert BM25Scorer().score("aspirin", []) == []


def test_its_scores_are_set_dependent_so_caches_skip_them() -> None:
    assert BM25Scorer().independent_scores is False and BM25Scorer().circuit_breaker is None


@pytest.mark.parametrize("use_async", [False, True])
async def test_as_primary_scorer(use_async: bool) -> None:
    reranker = Reranker(BM25Scorer(), top_n=2)
    query = "aspirin heart attack"
    result = await reranker.arerank(query, PASSAGES) if use_async else reranker.rerank(query, PASSAGES)
    assert result.source.kind is SourceKind.MODEL
    assert {item.original_rank for item in result} == {1, 3}


@pytest.mark.parametrize("use_async", [False, True])
async def test_as_fallback_when_the_primary_fails_or_hangs(use_async: bool) -> None:
    for primary, why in ((FailingScorer(name="remote"), "error ConnectionError"), (ConstantTimeScorer(2.0), "timeout")):
        reranker = Reranker(primary, fallback_scorer=BM25Scorer(), timeout_s=1.0, fallback_timeout_s=0.5, top_n=2)
        query = "aspirin heart attack"
        result = await reranker.arerank(query, PASSAGES) if use_async else reranker.rerank(query, PASSAGES)
        assert str(result.source).startswith("fallback:secondary bm25: ") and why in str(result.source)
        assert {item.original_rank for item in result} == {1, 3}
        assert result.latency_s < 1.5


async def test_both_frameworks_fall_back_to_bm25_when_the_primary_fails() -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from langchain_rerank_prod import RerankProdCompressor
    from llamaindex_rerank_prod import RerankProdPostprocessor

    reranker = Reranker(FailingScorer(name="remote"), fallback_scorer=BM25Scorer(), top_n=2)
    compressor = RerankProdCompressor(reranker=reranker)
    docs = [Document(page_content=text, id=f"d{i}") for i, text in enumerate(PASSAGES)]
    for out in (
        compressor.compress_documents(docs, "aspirin heart attack"),
        await compressor.acompress_documents(docs, "aspirin heart attack"),
    ):
        assert {d.id for d in out} == {"d1", "d3"}
        assert all(d.metadata["rerank_source"].startswith("fallback:secondary bm25") for d in out)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.5) for i, t in enumerate(PASSAGES)]
    out = await RerankProdPostprocessor(reranker=reranker).apostprocess_nodes(
        nodes, QueryBundle("aspirin heart attack")
    )
    assert {n.node.node_id for n in out} == {"n1", "n3"}
    assert out[0].node.metadata["rerank_source"].startswith("fallback:secondary bm25")
