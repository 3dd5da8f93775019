"""End to end on real data: SciFact test queries, BM25 top-20, the shared cross-encoder.

Hybrid fusion of the cross-encoder with the BM25 score must beat the BM25 order on NDCG@10, and both
adapters must return exactly the core's order and scores.
"""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from langchain_rerank_prod import RerankProdCompressor
from llamaindex_rerank_prod import RerankProdPostprocessor
from rerank_prod import RESULT_METADATA_KEYS, Candidate, Reranker, WeightedFusion
from rerank_prod.evaluation.dataset import load_beir
from rerank_prod.evaluation.first_stage import bm25_rankings, candidate_sets
from rerank_prod.evaluation.ir_metrics import evaluate, mean_metrics

QUERIES = 40
DEPTH = 20


@pytest.fixture(scope="module")
def first_stage(scifact_dir):
    """(candidates per query, qrels of the chosen queries, query texts): the first test queries."""
    dataset = load_beir(scifact_dir, "test")
    chosen = sorted(dataset.query_ids, key=int)[:QUERIES]
    candidates = candidate_sets(dataset, bm25_rankings(dataset, chosen, DEPTH))
    return candidates, {qid: dataset.qrels[qid] for qid in chosen}, dataset.queries


def _ndcg_at_10(qrels, rankings: dict[str, list[str]]) -> float:
    return mean_metrics(evaluate(qrels, rankings, [10]))["ndcg@10"]


def test_hybrid_fusion_beats_bm25(first_stage, cross_encoder) -> None:
    candidates, qrels, queries = first_stage
    reranker = Reranker(cross_encoder, fusion=WeightedFusion(rerank_weight=0.5, retrieval_weight=0.5))
    bm25 = {qid: [c.id for c in cands] for qid, cands in candidates.items()}
    fused = {qid: [i.candidate.id for i in reranker.rerank(queries[qid], cands)] for qid, cands in candidates.items()}
    bm25_ndcg, fused_ndcg = _ndcg_at_10(qrels, bm25), _ndcg_at_10(qrels, fused)
    print(
        f"\nSciFact test, {QUERIES} queries, BM25 top-{DEPTH}: BM25 NDCG@10 {bm25_ndcg:.4f}, "
        f"cross-encoder + BM25 fusion {fused_ndcg:.4f}"
    )
    assert fused_ndcg > bm25_ndcg + 0.02
    assert reranker.metrics.snapshot()["by_source"]["model"] == QUERIES


def test_adapters_return_exactly_the_core_ranking(first_stage, cross_encoder) -> None:
    candidates, _, queries = first_stage
    reranker = Reranker(cross_encoder, top_n=10, fusion=WeightedFusion())
    compressor = RerankProdCompressor(reranker=reranker)
    postprocessor = RerankProdPostprocessor(reranker=reranker)
    for qid in list(candidates)[:5]:
        cands: list[Candidate] = candidates[qid]
        core = [(i.candidate.id, i.metadata()) for i in reranker.rerank(queries[qid], cands)]
        docs = compressor.compress_documents(
            [Document(page_content=c.text, id=c.id, metadata={"score": c.retrieval_score}) for c in cands], queries[qid]
        )
        nodes = postprocessor.postprocess_nodes(
            [NodeWithScore(node=TextNode(text=c.text, id_=c.id), score=c.retrieval_score) for c in cands],
            QueryBundle(queries[qid]),
        )
        contract = RESULT_METADATA_KEYS
        assert [(d.id, {k: d.metadata[k] for k in contract}) for d in docs] == core
        assert [(n.node.node_id, {k: n.node.metadata[k] for k in contract}) for n in nodes] == core
        assert [n.score for n in nodes] == [meta["relevance_score"] for _, meta in core]
